"""Reassignment's pure parts: the replica arithmetic the controller keeps in ZooKeeper,
and the plans `headwater reassign-partitions` reads, writes and proposes."""

from __future__ import annotations

import json

import pytest

from broker.controller.reassignment import ReplicaAssignment, check_target
from broker.zk import CorruptZnode, TopicAssignment
from client.reassign import (
    PlanError,
    parse_log_dirs,
    parse_plan,
    parse_topics_to_move,
    plan_json,
    propose,
)
from client.types import TopicPartition, TopicPartitionReplica
from protocol.errors import InvalidReplicaAssignmentError


def test_a_move_lists_the_target_first_then_what_leaves() -> None:
    move = ReplicaAssignment((1, 2, 3)).reassign_to([2, 3, 4])
    assert move == ReplicaAssignment((2, 3, 4, 1), adding=(4,), removing=(1,))
    assert (move.origin, move.target) == ((2, 3, 1), (2, 3, 4))
    assert not move.complete([1, 2, 3]) and move.complete([3, 4, 2])


def test_a_second_move_replaces_the_first_from_the_same_origin() -> None:
    first = ReplicaAssignment((1, 2)).reassign_to([3, 4])
    second = first.reassign_to([4, 5])
    assert second == ReplicaAssignment((4, 5, 1, 2), adding=(4, 5), removing=(1, 2))
    # cancelling goes back to the origin: nothing added or removed any more
    back = second.reassign_to(second.origin)
    assert back == ReplicaAssignment((1, 2)) and not back.reassigning


def test_a_reorder_is_no_move() -> None:
    assert ReplicaAssignment((1, 2, 3)).reassign_to([3, 1, 2]) == ReplicaAssignment((3, 1, 2))


@pytest.mark.parametrize(
    ("target", "why"),
    [([], "empty"), ([1, 2, 1], "broker 1 is named twice"), ([1, 7, 8], "brokers 7, 8 are not")],
)
def test_targets_kafka_refuses(target: list[int], why: str) -> None:
    with pytest.raises(InvalidReplicaAssignmentError, match=why):
        check_target("t-0", target, {1, 2, 3})


def test_the_assignment_znode_keeps_moves_and_reads_kafkas_older_version() -> None:
    moving = TopicAssignment("t", {0: [2, 3, 1], 1: [1]}, adding={0: [3]}, removing={0: [1]})
    assert TopicAssignment.from_json("t", moving.to_json()) == moving
    assert moving.reassigning == {0}
    v1 = json.dumps({"version": 1, "partitions": {"0": [1, 2]}}).encode()
    assert TopicAssignment.from_json("t", v1) == TopicAssignment("t", {0: [1, 2]})
    bad = json.dumps({"version": 2, "partitions": {"0": [1]}, "adding_replicas": [1]}).encode()
    with pytest.raises(CorruptZnode):
        TopicAssignment.from_json("t", bad)


def test_a_plan_is_kafkas_json_both_ways() -> None:
    plan = {TopicPartition("b", 0): [3, 1], TopicPartition("a", 1): [2]}
    text = plan_json(plan)
    assert json.loads(text) == {
        "version": 1,
        "partitions": [
            {"topic": "a", "partition": 1, "replicas": [2], "log_dirs": ["any"]},
            {"topic": "b", "partition": 0, "replicas": [3, 1], "log_dirs": ["any", "any"]},
        ],
    }
    assert parse_plan(text, "plan.json") == plan
    kafkas = '{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[1,2],"log_dirs":["any","any"]}]}'  # noqa: E501
    assert parse_plan(kafkas, "k.json") == {TopicPartition("a", 0): [1, 2]}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "plan.json is not JSON"),
        ('{"version":1,"partitions":[]}', "not empty"),
        ('{"partitions":[{"partition":0,"replicas":[1]}]}', 'partitions\\[0\\] needs a "topic"'),
        ('{"partitions":[{"topic":"a","partition":-1,"replicas":[1]}]}', '"partition" number'),
        ('{"partitions":[{"topic":"a","partition":true,"replicas":[1]}]}', '"partition" number'),
        ('{"partitions":[{"topic":"a","partition":0,"replicas":["1"]}]}', '"replicas"'),
        ('{"partitions":[{"topic":"a","partition":0,"replicas":[]}]}', '"replicas"'),
        (
            '{"partitions":[{"topic":"a","partition":0,"replicas":[1,2],"log_dirs":["/d"]}]}',
            '"log_dirs" needs one entry per replica',
        ),
        (
            '{"partitions":[{"topic":"a","partition":0,"replicas":[1],"log_dirs":["d"]}]}',
            "an absolute\npath|absolute",
        ),
        (
            '{"partitions":[{"topic":"a","partition":0,"replicas":[1]},'
            '{"topic":"a","partition":0,"replicas":[2]}]}',
            "a-0 is in the plan twice",
        ),
    ],
)
def test_a_bad_plan_says_where(text: str, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        parse_plan(text, "plan.json")


def test_a_plan_may_name_the_data_directory_of_each_replica() -> None:
    text = (
        '{"version":1,"partitions":[{"topic":"a","partition":0,"replicas":[1,2],'
        '"log_dirs":["/disk-b","any"]},{"topic":"b","partition":3,"replicas":[2]}]}'
    )
    assert parse_plan(text, "plan.json") == {
        TopicPartition("a", 0): [1, 2],
        TopicPartition("b", 3): [2],
    }
    assert parse_log_dirs(text, "plan.json") == {TopicPartitionReplica("a", 0, 1): "/disk-b"}


def test_topics_to_move() -> None:
    text = '{"version":1,"topics":[{"topic":"a"},{"topic":"b"},{"topic":"a"}]}'
    assert parse_topics_to_move(text, "t.json") == ["a", "b"]
    with pytest.raises(PlanError, match=r'topics\[0\] needs a "topic"'):
        parse_topics_to_move('{"topics":[{"name":"a"}]}', "t.json")


def test_a_proposal_spreads_leaders_and_keeps_replica_counts() -> None:
    current = {TopicPartition("a", p): [1, 2] for p in range(4)}
    current[TopicPartition("b", 0)] = [1]
    plan = propose(current, [4, 2, 3], start=0)
    assert [plan[TopicPartition("a", p)] for p in range(4)] == [[2, 3], [3, 4], [4, 2], [2, 3]]
    assert plan[TopicPartition("b", 0)] == [3]  # the next topic starts one further on
    with pytest.raises(PlanError, match="has 2 replicas but --broker-list names 1 broker"):
        propose(current, [5])

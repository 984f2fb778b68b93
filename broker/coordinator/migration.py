"""Kafka's online migration between the two consumer group protocols (KIP-848): a
classic group with members is taken into the new protocol when a member of the new one
joins it (upgrade), and a group of the new protocol whose members left are all classic
is given back to the classic protocol (downgrade), each as Kafka 4.0's coordinator does
it (ConsumerGroup.fromClassicGroup, ClassicGroup.fromConsumerGroup). Pure: the
coordinator decides when, and writes the records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

from broker.coordinator.consumer_group import STABLE, ConsumerGroup, ConsumerMember
from broker.coordinator.group import Group, Member
from protocol.consumer_group_log import Assignment, ClassicMetadata, TopicInfo
from protocol.consumer_protocol import (
    Assignment as ProtocolAssignment,
)
from protocol.consumer_protocol import (
    ProtocolError,
    decode_assignment,
    decode_subscription,
    encode_assignment,
)
from protocol.topic_partition import TopicPartition

__all__ = ["classic_members", "consumer_members", "protocol_for", "readable"]


def consumer_members(
    classic: Group, topics: Mapping[str, TopicInfo], now_ms: int
) -> list[tuple[ConsumerMember, Assignment]]:
    """Each classic member as a member of the new protocol that still speaks the classic
    one: at the group's generation, Stable, subscribed to the topics its metadata for
    the group's protocol names, holding what its last assignment gave it (Kafka's
    fromClassicGroup). ProtocolError if a member's bytes are not Kafka's consumer
    protocol."""
    out = []
    for m in classic.members.values():
        subscription = decode_subscription(m.metadata(classic.protocol_name))
        assigned: dict[bytes, frozenset[int]] = {}
        if m.assignment:  # (a member that never synced has none)
            for tp in decode_assignment(m.assignment).partitions:
                info = topics.get(tp.topic)
                if info is not None:
                    assigned[info.topic_id] = assigned.get(info.topic_id, frozenset()) | {
                        tp.partition
                    }
        member = ConsumerMember(
            m.member_id,
            instance_id=m.group_instance_id,
            client_id=m.client_id,
            client_host=m.client_host,
            rack_id=subscription.rack or None,  # v3's (KIP-881)
            rebalance_timeout_ms=m.rebalance_timeout_ms,
            subscribed=tuple(sorted(set(subscription.topics))),
            epoch=classic.generation_id,
            previous_epoch=classic.generation_id,
            state=STABLE,
            classic=ClassicMetadata(m.session_timeout_ms, tuple(m.protocols)),
            session_deadline_ms=now_ms + m.session_timeout_ms,
        )
        out.append((member, assigned))
    return out


def protocol_for(members: list[ConsumerMember]) -> str | None:
    """The protocol every member offers that most of them prefer (Kafka's classic vote:
    each votes for the first of the common ones in its own order); None if none is."""
    offered = [[name for name, _ in m.classic.protocols] for m in members if m.classic]
    if not offered or len(offered) != len(members):
        return None
    common = set(offered[0]).intersection(*offered[1:])
    if not common:
        return None
    votes = Counter(next(n for n in names if n in common) for names in offered)
    return max(sorted(votes), key=lambda name: votes[name])


def classic_members(
    group: ConsumerGroup,
    leaving: Collection[str],
    names: Mapping[bytes, str],
    protocol: str,
    now_ms: int,
) -> list[Member]:
    """The group's members but ``leaving``, all classic, as a classic group's: each with
    its protocols and session timeout, and as its assignment its target in the new
    protocol, in Kafka's ConsumerProtocol bytes (Kafka's fromConsumerGroup)."""
    out = []
    for m in group.members.values():
        if m.member_id in leaving:
            continue
        assert m.classic is not None
        target = group.target.get(m.member_id, {})
        partitions = [
            TopicPartition(names[t], p) for t, ps in target.items() if t in names for p in ps
        ]
        out.append(
            Member(
                m.member_id,
                m.instance_id,
                m.client_id,
                m.classic.session_timeout_ms,
                m.rebalance_timeout_ms,
                "consumer",
                list(m.classic.protocols),
                now_ms,
                m.client_host,
                encode_assignment(ProtocolAssignment(sorted(partitions))),
            )
        )
    return out


def readable(group: Group) -> bool:
    """Whether every member's subscription for the group's protocol, and assignment,
    are Kafka's consumer protocol (else the group is not taken: Kafka's
    GROUP_ID_NOT_FOUND)."""
    try:
        for m in group.members.values():
            decode_subscription(m.metadata(group.protocol_name))
            if m.assignment:
                decode_assignment(m.assignment)
    except ProtocolError:
        return False
    return True

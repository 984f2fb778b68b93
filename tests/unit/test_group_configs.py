"""Group configs (Kafka's ConfigResource type GROUP): which names are taken, their checks,
and a heartbeat interval below the session timeout."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.client import KazooClient

from broker.config_changes import ConfigSubject, incremented
from broker.group_configs import (
    GROUP_CONFIGS,
    GroupConfigs,
    check_overrides,
    group_config_path,
    group_subject,
)
from broker.zk import CREATE, NoNode, ZkUnavailable
from protocol.apis import AlterConfigOp, IncrementalAlterableConfig
from protocol.errors import InvalidConfigError

BROKER = {
    "group.share.record.lock.duration.ms": "30000",
    "group.share.session.timeout.ms": "45000",
    "group.share.heartbeat.interval.ms": "5000",
}


def _subject() -> ConfigSubject:
    return group_subject("g", BROKER.__getitem__)


def _set(name: str, value: str) -> IncrementalAlterableConfig:
    return IncrementalAlterableConfig(name=name, config_operation=AlterConfigOp.SET, value=value)


def test_values_in_force_are_the_brokers_until_overridden() -> None:
    subject = _subject()
    assert subject.in_force("share.auto.offset.reset") == "latest"
    assert subject.in_force("share.session.timeout.ms") == "45000"
    assert set(GROUP_CONFIGS) == {
        "share.auto.offset.reset",
        "share.record.lock.duration.ms",
        "share.session.timeout.ms",
        "share.heartbeat.interval.ms",
    }


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("share.auto.offset.reset", "none", "latest or earliest"),
        ("share.auto.offset.reset", "by_duration:PT1H", "not offered here yet"),
        ("share.record.lock.duration.ms", "999", "from 1000 to 3600000"),
        ("share.record.lock.duration.ms", "ten", "whole number"),
        ("share.heartbeat.interval.ms", "45000", "less than share.session.timeout.ms"),
        ("share.session.timeout.ms", "4000", "less than share.session.timeout.ms"),
    ],
)
def test_bad_values_are_refused_with_why(name: str, value: str, why: str) -> None:
    subject = _subject()
    wanted = incremented(subject, {}, [_set(name, value)])
    with pytest.raises(InvalidConfigError, match=why):
        check_overrides("g", wanted, subject.in_force)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("consumer.session.timeout.ms", "not offered here yet"),
        ("streams.num.standby.replicas", "not offered here yet"),
        ("retention.ms", "unknown group config"),
    ],
)
def test_names_not_served_are_refused(name: str, why: str) -> None:
    with pytest.raises(InvalidConfigError, match=why):
        incremented(_subject(), {}, [_set(name, "1")])


def test_good_overrides_pass() -> None:
    subject = _subject()
    wanted = incremented(
        subject,
        {"share.auto.offset.reset": "earliest"},
        [_set("share.session.timeout.ms", "60000"), _set("share.heartbeat.interval.ms", "20000")],
    )
    check_overrides("g", wanted, subject.in_force)
    assert wanted["share.auto.offset.reset"] == "earliest"


# --- the cache and its watches, over a ZooKeeper with kazoo's one-shot watches ---------

LOCK = "share.record.lock.duration.ms"
RESET = "share.auto.offset.reset"


class _FakeZk:
    """Znodes and one-shot watches (fired on the loop after the change, as kazoo's)."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[bytes, int]] = {}
        self.watches: dict[str, list[Any]] = {}
        self.fail_gets = 0
        self.after_get_miss: Any = None

    def _watch(self, path: str, watch: Any) -> None:
        if watch is not None:
            self.watches.setdefault(path, []).append(watch)

    def _fire(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        for w in self.watches.pop(path, []):
            loop.call_soon(w, SimpleNamespace(path=path))

    async def get(self, path: str, watch: Any = None) -> tuple[bytes, Any]:
        await asyncio.sleep(0)
        if self.fail_gets and watch is not None:  # a broker's watched re-read
            self.fail_gets -= 1
            raise ZkUnavailable("zookeeper away")
        if path not in self.nodes:
            if self.after_get_miss is not None:
                hook, self.after_get_miss = self.after_get_miss, None
                hook()
            raise NoNode(path)
        self._watch(path, watch)
        data, version = self.nodes[path]
        return data, SimpleNamespace(version=version)

    async def exists(self, path: str, watch: Any = None) -> Any:
        await asyncio.sleep(0)
        self._watch(path, watch)
        found = self.nodes.get(path)
        return None if found is None else SimpleNamespace(version=found[1])

    def put(self, path: str, config: dict[str, str]) -> None:
        old = self.nodes.get(path)
        self.nodes[path] = (
            json.dumps({"version": 1, "config": config}).encode(),
            0 if old is None else old[1] + 1,
        )
        self._fire(path)

    async def write_config(
        self, path: str, config: dict[str, str], *, version: int, notice: bytes, parents: Any = ()
    ) -> bool:
        await asyncio.sleep(0)
        old = self.nodes.get(path)
        if (old is None) != (version == CREATE) or (old is not None and old[1] != version):
            return False
        self.put(path, config)
        return True


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def _configs(zk: _FakeZk) -> GroupConfigs:
    return GroupConfigs(zk, BROKER.__getitem__)  # type: ignore[arg-type]


def _setting(name: str, value: str) -> Callable[[dict[str, str]], dict[str, str]]:
    return lambda current: {**current, name: value}


async def test_a_broker_that_altered_a_group_it_never_read_sees_later_changes() -> None:
    """Review 145: the broker that took an alter of a group it did not follow must not
    keep that value unwatched (a later alter through another broker would never reach it)."""
    zk = _FakeZk()
    a, b = _configs(zk), _configs(zk)  # two brokers
    await a.change("g", _setting(LOCK, "7000"), validate_only=False)  # the alter went to A
    assert await a.get("g") == {LOCK: "7000"}
    await b.change("g", _setting(LOCK, "9000"), validate_only=False)  # the next to B
    await _settle()
    assert a.value("g", LOCK) == "9000"


async def test_a_znode_made_between_the_get_and_the_exists_is_seen() -> None:
    zk = _FakeZk()
    a = _configs(zk)
    zk.after_get_miss = lambda: zk.put(group_config_path("g"), {RESET: "earliest"})
    assert await a.get("g") == {RESET: "earliest"}


async def test_a_re_read_that_fails_leaves_the_group_to_be_read_at_its_next_use() -> None:
    zk = _FakeZk()
    a, b = _configs(zk), _configs(zk)
    await b.change("g", _setting(LOCK, "7000"), validate_only=False)
    assert await a.get("g") == {LOCK: "7000"}
    zk.fail_gets = 1  # the re-read after the watch fires meets a ZooKeeper hiccup
    await b.change("g", _setting(LOCK, "9000"), validate_only=False)
    await _settle()
    await b.change("g", _setting(LOCK, "11000"), validate_only=False)
    await _settle()
    assert await a.get("g") == {LOCK: "11000"}  # read again (and watched again)
    await b.change("g", _setting(LOCK, "12000"), validate_only=False)
    await _settle()
    assert a.value("g", LOCK) == "12000"


async def test_a_watch_that_ends_keeps_the_values_in_force_until_read_again() -> None:
    zk = _FakeZk()
    a = _configs(zk)
    zk.put(group_config_path("g"), {LOCK: "7000"})
    await a.get("g")
    zk._fire(group_config_path("g"))  # (kazoo fires every watch when a session is lost)
    assert a.value("g", LOCK) == "7000"  # not the broker's 30000 while it is read again
    await _settle()
    assert a.value("g", LOCK) == "7000"


def test_a_group_named_dot_has_a_znode_zookeeper_takes() -> None:
    """'.' and '..' are Kafka group ids, not znode names (kazoo refuses the path)."""
    client = KazooClient(hosts="127.0.0.1:1")
    for group in (".", "..", "a.b"):
        client.get_async(group_config_path(group))  # raises ValueError for a relative path


def test_numbers_are_plain_digits() -> None:
    check = GROUP_CONFIGS["share.record.lock.duration.ms"].check
    assert (
        check("1_000") is not None and check("+5000") is not None and check("\uff15000") is not None
    )
    assert check("5000") is None

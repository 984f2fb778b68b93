"""What an AlterConfigs or IncrementalAlterConfigs request makes of an entity's overrides
(a topic's, a broker's, every broker's default): pure functions, the writing is the
caller's.

AlterConfigs replaces the overrides with exactly the ones given (a config left out returns
to its default, Kafka's semantics); IncrementalAlterConfigs (KIP-339) applies SET, DELETE,
APPEND and SUBTRACT to single entries, in order, as Kafka's ``prepareIncrementalConfigs``
(APPEND and SUBTRACT start from the value in force: the override, else the default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from broker.log import LogConfig
from protocol.apis import AlterableConfig, AlterConfigOp, IncrementalAlterableConfig
from protocol.errors import InvalidConfigError, InvalidRequestError

__all__ = [
    "LIST_TOPIC_CONFIGS",
    "ConfigSubject",
    "incremental_overrides",
    "incremented",
    "replaced",
    "replaced_overrides",
    "topic_subject",
]

LIST_TOPIC_CONFIGS = frozenset(
    {
        "cleanup.policy",
        "leader.replication.throttled.replicas",
        "follower.replication.throttled.replicas",
    }
)
"""Topic configs whose value is a comma-separated list (APPEND and SUBTRACT apply)."""


class ConfigSubject(NamedTuple):
    """The entity whose overrides change, as the rules need it."""

    label: str
    """How errors name it: ``topic 'orders'``, ``broker 1``, ``every broker's default``."""
    check_name: Callable[[str], None]
    """Raises :class:`InvalidConfigError` for a config it cannot have."""
    lists: frozenset[str]
    """Its configs whose value is a comma-separated list."""
    in_force: Callable[[str], str]
    """A config's value when it has no override."""


def topic_subject(topic: str, defaults: LogConfig) -> ConfigSubject:
    def check_name(name: str) -> None:
        known = LogConfig().properties()
        if name not in known:
            raise InvalidConfigError(
                f"topic {topic!r}: unknown topic config {name!r}; known: {', '.join(known)}"
            )

    return ConfigSubject(
        f"topic {topic!r}",
        check_name,
        LIST_TOPIC_CONFIGS,
        lambda name: str(defaults.properties()[name]),
    )


def replaced(subject: ConfigSubject, configs: list[AlterableConfig]) -> dict[str, str]:
    """AlterConfigs: the new overrides are exactly ``configs``."""
    _unique(subject, (c.name for c in configs))
    wanted = {}
    for c in configs:
        subject.check_name(c.name)
        if c.value is None:
            raise InvalidConfigError(
                f"{subject.label}: {c.name} has no value (AlterConfigs replaces every "
                "override: leave a config out to return it to its default)"
            )
        wanted[c.name] = c.value.strip()
    return wanted


def incremented(
    subject: ConfigSubject, current: dict[str, str], ops: list[IncrementalAlterableConfig]
) -> dict[str, str]:
    """IncrementalAlterConfigs: ``current`` overrides with ``ops`` applied in order."""
    _unique(subject, (op.name for op in ops))
    wanted = dict(current)
    for op in ops:
        subject.check_name(op.name)
        if op.config_operation == AlterConfigOp.DELETE:
            wanted.pop(op.name, None)
            continue
        if op.value is None:
            raise InvalidConfigError(f"{subject.label}: {op.name} has no value")
        if op.config_operation == AlterConfigOp.SET:
            wanted[op.name] = op.value.strip()
        elif op.config_operation in (AlterConfigOp.APPEND, AlterConfigOp.SUBTRACT):
            wanted[op.name] = _list_op(subject, op, wanted.get(op.name))
        else:
            raise InvalidRequestError(
                f"{subject.label}: unknown config operation {op.config_operation} for "
                f"{op.name} (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)"
            )
    return wanted


def replaced_overrides(topic: str, configs: list[AlterableConfig]) -> dict[str, str]:
    """AlterConfigs on a topic."""
    return replaced(topic_subject(topic, LogConfig()), configs)


def incremental_overrides(
    topic: str,
    current: dict[str, str],
    ops: list[IncrementalAlterableConfig],
    defaults: LogConfig,
) -> dict[str, str]:
    """IncrementalAlterConfigs on a topic whose configs default to ``defaults``."""
    return incremented(topic_subject(topic, defaults), current, ops)


def _unique(subject: ConfigSubject, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidRequestError(f"{subject.label}: {name} is given twice")
        seen.add(name)


def _list_op(subject: ConfigSubject, op: IncrementalAlterableConfig, override: str | None) -> str:
    if op.name not in subject.lists:
        raise InvalidRequestError(
            f"{subject.label}: {op.name} is not a list; APPEND and SUBTRACT are for list "
            f"configs ({', '.join(sorted(subject.lists))})"
        )
    in_force = override if override is not None else subject.in_force(op.name)
    items = [i.strip() for i in in_force.split(",") if i.strip()]
    given = [i.strip() for i in (op.value or "").split(",") if i.strip()]
    if op.config_operation == AlterConfigOp.APPEND:
        items += [i for i in given if i not in items]
    else:
        items = [i for i in items if i not in given]
    return ",".join(items)

"""Admin requests any broker serves: CreateTopics, DeleteTopics, DescribeConfigs,
AlterConfigs, IncrementalAlterConfigs, auto-create.

As Kafka's ZooKeeper-mode AdminManager: the broker validates, then writes the request
into ZooKeeper (a topic's config, then its replica assignment; or a deletion marker under
``/admin/delete_topics``) and the controller does the rest. Creating the assignment znode
is atomic, so two brokers racing to create one topic cannot both succeed. The request then
waits, up to its timeout, until this broker's metadata shows the result, so a client that
creates a topic can produce to it at once.

A config change writes ``/config/topics/<topic>`` (compare-and-set on the version read,
so two concurrent incremental changes cannot lose one another) together with a change
notification, in one ZooKeeper multi; every broker applies it live
(:mod:`broker.dynamic_config`). The answer comes once ZooKeeper has it, as in Kafka.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog

from broker.authorizer import Authorizer, group_not_authorized, principal, topic_not_authorized
from broker.broker_configs import BrokerConfigs
from broker.config import TOPIC_CONFIG_SYNONYMS, BrokerConfig
from broker.config_changes import (
    LIST_TOPIC_CONFIGS,
    ConfigSubject,
    incremented,
    replaced,
    topic_subject,
)
from broker.controller.assignment import assign_replicas
from broker.dynamic_config import TopicConfigs
from broker.group_configs import GroupConfigs, group_subject
from broker.log import LogConfig
from broker.metadata import MetadataCache
from broker.quotas import QuotaManager
from broker.zk import (
    CREATE,
    BrokerRegistration,
    NodeExists,
    NoNode,
    TopicAssignment,
    VersionConflict,
    ZkBridge,
    ZkConnectionLoss,
    ZkError,
    ZkUnavailable,
    config_change_json,
    paths,
    topic_config_from_json,
    topic_config_json,
)
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    AlterableConfig,
    AlterConfigsRequest,
    AlterConfigsResourceResponse,
    AlterConfigsResponse,
    ConfigResourceType,
    ConfigSource,
    CreatableTopic,
    CreatableTopicResult,
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreatePartitionsTopic,
    CreatePartitionsTopicResult,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeletableTopicResult,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsEntry,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    DescribeConfigsResponse,
    DescribeConfigsResult,
    DescribeConfigsSynonym,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from protocol.errors import (
    ApiError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicaAssignmentError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    InvalidTopicError,
    ReassignmentInProgressError,
    RequestTimedOutError,
    ThrottlingQuotaExceededError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TopicDeletionDisabledError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from protocol.group_log import OFFSETS_TOPIC
from protocol.quotas import TokenBucket
from protocol.topic_id import ZERO_TOPIC_ID, format_topic_id, new_topic_id

__all__ = ["TopicAdmin", "validate_topic_name"]

_R = TypeVar("_R")
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")
_MAX_NAME = 249
_CAS_ATTEMPTS = 20
_CAS_BACKOFF_S = 0.005


_CREATES = 3  # a create sent again after its answer was lost: a third loss is an outage


class _AnswerLost(Exception):
    """A topic's assignment written, its answer lost with the connection to ZooKeeper:
    read it again to see whether it was made. ``had``: its partition count before."""

    def __init__(self, had: int) -> None:
        super().__init__(had)
        self.had = had


def validate_topic_name(name: str) -> None:
    """Kafka's rules for topic names, or :class:`InvalidTopicError`."""
    if name in ("", ".", ".."):
        raise InvalidTopicError(f"{name!r} is not a valid topic name")
    if len(name) > _MAX_NAME:
        raise InvalidTopicError(f"a topic name has at most {_MAX_NAME} characters ({len(name)})")
    if not _LEGAL.match(name):
        raise InvalidTopicError(
            f"topic name {name!r} may only contain letters, digits, '.', '_' and '-'"
        )


class TopicAdmin:
    def __init__(
        self,
        zk: ZkBridge,
        config: BrokerConfig,
        metadata: MetadataCache,
        authorizer: Authorizer | None = None,
        *,
        broker_configs: BrokerConfigs | None = None,
        quotas: QuotaManager | None = None,
        topic_configs: TopicConfigs | None = None,
    ) -> None:
        self._zk = zk
        self._quotas = quotas  # controller_mutation_rate (KIP-599)
        self._topic_configs = topic_configs  # what a describe reads, it applies here
        self._config = config
        self._metadata = metadata
        self._acl = authorizer or Authorizer()
        self.broker_configs = broker_configs or BrokerConfigs(zk, config)
        self.group_configs = GroupConfigs(zk, lambda setting: str(config[setting]))
        """Groups' overrides (ConfigResource type GROUP), read where they are used."""
        self._log = structlog.get_logger("headwater.admin").bind(broker_id=config.broker_id)

    # --- create -------------------------------------------------------------------------

    async def create_topics(
        self, request: CreateTopicsRequest, *, strict: bool = True
    ) -> CreateTopicsResponse:
        """``strict``: over the controller mutation quota, topics are refused (see
        :class:`_MutationGate`; False: let through and throttled)."""
        gate = _MutationGate(None if request.validate_only else self._mutations(), strict=strict)
        default = int(self._config["num.partitions"])
        names = [t.name for t in request.topics]
        twice = {n for n in names if names.count(n) > 1}
        creating: set[str] = set()
        results = await asyncio.gather(
            *(
                _named_twice(t.name)  # Kafka's too: none of them is made
                if t.name in twice
                else _refused_creation(t.name)
                if not self.may_create(t.name)
                # one that fails for another reason is not counted, nor said to be throttled
                else gate.refused(t.name, CreatableTopicResult)
                if self._creatable(t.name) and gate.over(t.name, _partitions_of(t, default))
                else gate.counted(t.name, self._create(t, request.validate_only, creating))
                for t in request.topics
            )
        )
        created = {t.name for t, r in zip(request.topics, results, strict=True) if not r.error_code}
        # a topic another request is creating (a client's retry of a create whose answer it
        # lost): TOPIC_ALREADY_EXISTS too waits until this broker knows its leaders, so
        # "it exists" means a producer can use it, as after a create that made it
        timeout_s = max(request.timeout_ms, 0) / 1000
        if (created or creating) and not request.validate_only and timeout_s > 0:
            ready = await self._metadata.wait_for(
                lambda: all(self._metadata.has_leaders(t) for t in created | creating),
                timeout_s,
            )
            if not ready:
                for r in results:
                    if r.name in created and not self._metadata.has_leaders(r.name):
                        r.error_code = RequestTimedOutError.code
                        r.error_message = (
                            f"topic {r.name!r} was created but its leaders were not known within "
                            f"{request.timeout_ms} ms; it will be usable shortly"
                        )
        return CreateTopicsResponse(topics=list(results), throttle_time_ms=gate.throttle_ms)

    def _mutations(self) -> TokenBucket | None:
        return None if self._quotas is None else self._quotas.mutations()

    def _creatable(self, topic: str) -> bool:
        """Whether a creation of ``topic`` may succeed, as far as this broker can tell at
        once (a valid name, not a topic already): only those count against a mutation
        quota, so a doomed one gets its own error, not THROTTLING_QUOTA_EXCEEDED."""
        try:
            validate_topic_name(topic)
        except ApiError:
            return False
        return topic not in self._metadata.topics

    def _deletable(self, topic: str) -> bool:
        return (
            bool(self._config["delete.topic.enable"])
            and topic in self._metadata.topics
            and self._acl.allowed(Operation.DELETE, ResourceType.TOPIC, topic)
        )

    def may_create(self, topic: str) -> bool:
        """Kafka's rule: CREATE on the cluster, or on the topic."""
        return self._acl.allowed_on_cluster(Operation.CREATE) or self._acl.allowed(
            Operation.CREATE, ResourceType.TOPIC, topic
        )

    async def _create(
        self, topic: CreatableTopic, validate_only: bool, creating: set[str] | None = None
    ) -> CreatableTopicResult:
        """``creating`` gets the topic's name if another request made it (in ZooKeeper) and
        this broker's metadata does not show it yet."""
        try:
            assignment, configs, keeps_ids = await self._plan(topic)
            topic_id = ZERO_TOPIC_ID  # (Kafka's answer to validate_only: no id yet)
            if not validate_only:
                topic_id = await self._write_topic(topic.name, assignment, configs, keeps_ids)
                self._log.info(
                    "topic.created",
                    topic=topic.name,
                    topic_id=format_topic_id(topic_id),
                    partitions=len(assignment),
                    configs=configs,
                )
        except ApiError as exc:
            if isinstance(exc, _ExistsInZooKeeper) and creating is not None:
                creating.add(topic.name)
            return CreatableTopicResult(
                name=topic.name, error_code=exc.code, error_message=exc.message
            )
        except ZkUnavailable as exc:  # (this broker's session expired, ZooKeeper paused)
            self._log.warning("topic.create_failed", topic=topic.name, error=str(exc))
            return CreatableTopicResult(
                name=topic.name,
                error_code=RequestTimedOutError.code,
                error_message=(
                    f"topic {topic.name!r}: this broker could not reach ZooKeeper ({exc}); "
                    "it may or may not be created: list the topics, or try again"
                ),
            )
        return CreatableTopicResult(
            name=topic.name,
            topic_id=topic_id,
            num_partitions=len(assignment),
            replication_factor=len(assignment[0]),
        )

    async def _plan(
        self, topic: CreatableTopic
    ) -> tuple[dict[int, list[int]], dict[str, str], bool]:
        """Validate ``topic``: its replica assignment and its config overrides; and whether
        it gets an id (every registered broker keeps ids: see TOPIC_IDS_FEATURE)."""
        validate_topic_name(topic.name)
        if topic.name in self._metadata.topics:
            raise TopicAlreadyExistsError(f"topic {topic.name!r} already exists")
        configs = {c.name: c.value for c in topic.configs if c.value is not None}
        try:
            LogConfig().with_properties(configs)
        except ValueError as exc:
            raise InvalidConfigError(f"topic {topic.name!r}: {exc}") from None
        # the registered brokers, as Kafka's AdminZkClient reads them: this broker's metadata
        # may not list them yet right after a start
        registered = await self._registered()
        racks = {b: r.rack or None for b, r in registered.items()}
        brokers = sorted(racks)
        if topic.assignments:
            if topic.num_partitions != -1 or topic.replication_factor != -1:
                raise InvalidRequestError(
                    "give either manual replica assignments or partitions and replication "
                    "factor, not both"
                )
            assignment = {a.partition_index: list(a.broker_ids) for a in topic.assignments}
            self._check_assignment(topic.name, assignment, brokers)
        else:
            partitions = topic.num_partitions
            if partitions == -1:
                partitions = self._config["num.partitions"]
            factor = topic.replication_factor
            if factor == -1:
                factor = self._config["default.replication.factor"]
            assignment = assign_replicas(brokers, partitions, factor, racks=racks)
        return assignment, configs, all(r.keeps_topic_ids for r in registered.values())

    async def _registered(self) -> dict[int, BrokerRegistration]:
        """The registered brokers, read from ZooKeeper."""
        ids = sorted(int(b) for b in await self._zk.get_children(paths.BROKER_IDS))

        async def read(broker_id: int) -> BrokerRegistration | None:
            try:
                data, stat = await self._zk.get(paths.broker(broker_id))
            except NoNode:
                return None  # gone since: it is not counted below
            return BrokerRegistration.from_json(broker_id, data, stat)

        found = await asyncio.gather(*(read(b) for b in ids))
        return {b: r for b, r in zip(ids, found, strict=True) if r is not None}

    def _check_assignment(
        self, topic: str, assignment: dict[int, list[int]], brokers: list[int]
    ) -> None:
        if sorted(assignment) != list(range(len(assignment))):
            raise InvalidReplicaAssignmentError(
                f"topic {topic!r}: partitions must be numbered 0..n-1, got {sorted(assignment)}"
            )
        sizes = {len(r) for r in assignment.values()}
        if len(sizes) != 1:
            raise InvalidReplicaAssignmentError(
                f"topic {topic!r}: every partition needs the same number of replicas"
            )
        if sizes.pop() < 1:
            raise InvalidReplicationFactorError(f"topic {topic!r}: a partition needs a replica")
        for partition, replicas in assignment.items():
            _check_replicas(topic, partition, replicas, brokers)

    async def _write_topic(
        self,
        topic: str,
        assignment: dict[int, list[int]],
        configs: dict[str, str],
        with_id: bool = True,
    ) -> bytes:
        """Write the topic's config, then its assignment with a new id (unless not
        ``with_id``: a broker of a build without ids is registered, and the controller
        gives the id later), which it returns."""
        # config first: the controller, seeing the assignment, may start the logs at once;
        # but not over the config of a topic that is there already (this broker's metadata
        # may not show it yet): its brokers would not hear of the change
        if await self._zk.exists(paths.topic(topic)) is not None:
            await self._already_exists(topic)
        path = paths.topic_config(topic)
        if not await self._made(path, topic_config_json(configs)):
            # a config left by a creation that did not finish, unless another request
            # made the topic meanwhile (a lost create's retry waits out an outage)
            if await self._zk.exists(paths.topic(topic)) is not None:
                await self._already_exists(topic)
            await self._zk.set(path, topic_config_json(configs))
        topic_id = new_topic_id() if with_id else ZERO_TOPIC_ID
        written = TopicAssignment(topic, assignment, topic_id=topic_id)
        if not await self._made(paths.topic(topic), written.to_json()):
            await self._already_exists(topic)
        if with_id:
            try:
                await self._zk.keep_topic_id(topic, topic_id)
            except NoNode:
                pass  # deleted already
            except ZkError as exc:  # the topic is made: its id has one copy, in the znode
                self._log.warning("topic.id_copy_not_written", topic=topic, error=str(exc))
        return written.topic_id

    async def _made(self, path: str, value: bytes) -> bool:
        """Create ``path`` (and its parents) holding ``value``: True if made here, False
        if it was there. A create whose answer was lost with the connection to ZooKeeper
        is tried again, and a znode found there then holding ``value`` is the one made
        (a topic's assignment carries the new topic id drawn for it: no other creator's
        holds the same bytes). Kafka's client, sending the create again, answers such a
        topic TOPIC_ALREADY_EXISTS."""
        lost = False
        for _ in range(_CREATES):
            try:
                await self._zk.create(path, value, makepath=True)
                return True
            except NodeExists:
                if not lost:
                    return False
                held = await self._zk.read_back(path)
                if held is None:  # gone since (deleted): try again
                    continue
                return held == value
            except ZkConnectionLoss:
                lost = True
        raise ZkConnectionLoss(
            f"the connection to ZooKeeper dropped with the creation of {path} out "
            f"{_CREATES} times in a row: it may or may not have been made"
        )

    async def _already_exists(self, topic: str) -> None:
        """Raise the TOPIC_ALREADY_EXISTS for ``topic``, which ZooKeeper has."""
        if await self._zk.exists(paths.delete_topic(topic)) is not None:
            raise TopicAlreadyExistsError(
                f"topic {topic!r} already exists and is being deleted; try again shortly"
            )
        raise _ExistsInZooKeeper(f"topic {topic!r} already exists")

    async def create_internal(self, topic: CreatableTopic) -> None:
        """Create an internal topic (``__consumer_offsets``); racing creators are fine."""
        result = await self._create(topic, validate_only=False)
        if result.error_code and result.error_code != TopicAlreadyExistsError.code:
            self._log.warning(
                "topic.internal_create_failed", topic=topic.name, error=result.error_message
            )

    async def auto_create(self, topic: str) -> None:
        """Create ``topic`` with the broker's defaults (a Metadata request asked for it)."""
        request = CreatableTopic(name=topic)
        result = await self._create(request, validate_only=False)
        if result.error_code and result.error_code != TopicAlreadyExistsError.code:
            self._log.info("topic.auto_create_failed", topic=topic, error=result.error_message)

    # --- more partitions ----------------------------------------------------------------

    async def create_partitions(
        self, request: CreatePartitionsRequest, *, strict: bool = True
    ) -> CreatePartitionsResponse:
        """CreatePartitions: each topic grows to ``count`` partitions. Its assignment znode
        gains the new partitions (compare-and-set on its version); the controller, watching
        it, starts them. Answered once the new partitions' leaders are known (as Kafka: not
        the old ones', which may be offline), or at ``timeout_ms``."""
        names = [t.name for t in request.topics]
        twice = {n for n in names if names.count(n) > 1}
        gate = _MutationGate(None if request.validate_only else self._mutations(), strict=strict)
        known = self._metadata.topics
        outcomes = await asyncio.gather(
            *(
                _paired(gate.refused(t.name, CreatePartitionsTopicResult))
                if t.name not in twice
                and t.name in known
                and t.count > len(known[t.name])
                and self._acl.allowed(Operation.ALTER, ResourceType.TOPIC, t.name)
                and gate.over(t.name, t.count - len(known.get(t.name, ())))
                else gate.counted_pair(
                    t.name, self._add_partitions(t, request.validate_only, twice)
                )
                for t in request.topics
            )
        )
        results = [result for result, _ in outcomes]
        added = {
            t.name: range(had, t.count)
            for t, (result, had) in zip(request.topics, outcomes, strict=True)
            if not result.error_code and had is not None
        }
        timeout_s = max(request.timeout_ms, 0) / 1000
        if added and not request.validate_only and timeout_s > 0:
            metadata = self._metadata

            def started(topic: str) -> bool:
                known = metadata.topics.get(topic)
                if known is None:
                    return True  # deleted meanwhile: said below, not waited for
                return all(p in known and known[p].leader in metadata.brokers for p in added[topic])

            await metadata.wait_for(lambda: all(map(started, added)), timeout_s)
            for r in results:
                if r.name not in added:
                    continue
                if r.name not in metadata.topics:
                    r.error_code = UnknownTopicOrPartitionError.code
                    r.error_message = f"topic {r.name!r} was deleted while it was being grown"
                elif not started(r.name):
                    r.error_code = RequestTimedOutError.code
                    r.error_message = (
                        f"topic {r.name!r} has its new partitions, but their leaders were not "
                        f"known within {request.timeout_ms} ms; they will be usable shortly"
                    )
        return CreatePartitionsResponse(results=results, throttle_time_ms=gate.throttle_ms)

    async def _add_partitions(
        self, topic: CreatePartitionsTopic, validate_only: bool, twice: set[str]
    ) -> tuple[CreatePartitionsTopicResult, int | None]:
        """The topic's result, and how many partitions it had before (None: none added)."""
        try:
            self._check(Operation.ALTER, topic.name)
            if topic.name in twice:
                raise InvalidRequestError(f"topic {topic.name!r} is named twice in the request")
            validate_topic_name(topic.name)
            wrote: int | None = None  # the count before a write whose answer was lost
            for attempt in range(_CAS_ATTEMPTS):
                if attempt:  # lost a race: a jittered pause, so racers do not collide again
                    await asyncio.sleep(random.uniform(0, _CAS_BACKOFF_S * attempt))
                try:
                    had = await self._grow(topic, validate_only, wrote)
                except _AnswerLost as lost:
                    wrote, had = lost.had, None
                if had is not None:
                    break
            else:
                raise RequestTimedOutError(
                    f"topic {topic.name!r}: its assignment kept changing under this request; "
                    "try again"
                )
        except ApiError as exc:
            result = CreatePartitionsTopicResult(
                name=topic.name, error_code=exc.code, error_message=exc.message
            )
            return result, None
        return CreatePartitionsTopicResult(name=topic.name), had

    async def _grow(
        self, topic: CreatePartitionsTopic, validate_only: bool, wrote: int | None = None
    ) -> int | None:
        """One read-check-write round of :meth:`_add_partitions`: the partition count read;
        None if another writer changed the assignment between our read and our write.
        ``wrote``: the count before a write of ours whose answer was lost with the
        connection (:class:`_AnswerLost`); if the topic has ``count`` partitions now, it
        was made (or a racer's the same), and that count is returned."""
        name = topic.name
        try:
            data, stat = await self._zk.get(paths.topic(name))
        except NoNode:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist") from None
        if await self._zk.exists(paths.delete_topic(name)) is not None:
            raise InvalidTopicError(f"topic {name!r} is being deleted")
        if name == OFFSETS_TOPIC:
            raise InvalidRequestError(
                f"the partitions of {OFFSETS_TOPIC} cannot be changed: each group's offsets "
                "are kept in the partition its id hashes to among them"
            )
        known = TopicAssignment.from_json(name, data)
        if known.reassigning:  # as Kafka: the write would have to carry the moves along
            raise ReassignmentInProgressError(
                f"topic {name!r} has partitions being reassigned "
                f"({', '.join(map(str, sorted(known.reassigning)))}); grow it when they are done"
            )
        current = known.partitions
        if wrote is not None and len(current) == topic.count:  # made (ours, or the same)
            self._log.info(
                "topic.partitions_added",
                topic=name,
                partitions=topic.count,
                added=list(range(wrote, topic.count)),
            )
            return wrote
        racks = {b: r.rack or None for b, r in (await self._registered()).items()}
        added = _new_partitions(name, current, topic, sorted(racks), racks)
        if validate_only:
            return len(current)
        try:
            await self._zk.set(
                paths.topic(name),
                dataclasses.replace(known, partitions={**current, **added}).to_json(),
                version=stat.version,
            )
        except (VersionConflict, NoNode):
            return None
        except ZkConnectionLoss:
            raise _AnswerLost(len(current)) from None
        self._log.info(
            "topic.partitions_added", topic=name, partitions=topic.count, added=sorted(added)
        )
        return len(current)

    # --- delete -------------------------------------------------------------------------

    async def delete_topics(
        self, request: DeleteTopicsRequest, *, strict: bool = True
    ) -> DeleteTopicsResponse:
        gate = _MutationGate(self._mutations(), strict=strict)
        known = self._metadata.topics
        ids = self._metadata.topic_ids

        def deletion(topic: str) -> Awaitable[DeletableTopicResult]:
            if self._deletable(topic) and gate.over(topic, len(known.get(topic, ()))):
                return gate.refused(topic, DeletableTopicResult)
            return gate.counted(topic, self._delete(topic))

        results = await asyncio.gather(
            *(_with_id(deletion(t), ids.get(t)) for t in request.topic_names),
            *(self._by_id(i, deletion) for i in request.topic_ids),
        )
        marked = {r.name for r in results if not r.error_code}
        timeout_s = max(request.timeout_ms, 0) / 1000
        if marked and timeout_s > 0:
            deadline = asyncio.get_running_loop().time() + timeout_s
            for r in results:
                if r.name in marked and not await self._until_gone(r.name, deadline):
                    r.error_code = RequestTimedOutError.code
                    r.error_message = (
                        f"topic {r.name!r} is marked for deletion but not gone within "
                        f"{request.timeout_ms} ms (a replica's broker may be down: it is "
                        "deleted when that broker returns)"
                    )
        return DeleteTopicsResponse(responses=list(results), throttle_time_ms=gate.throttle_ms)

    async def _by_id(
        self, topic_id: bytes, deletion: Callable[[str], Awaitable[DeletableTopicResult]]
    ) -> DeletableTopicResult:
        """A topic to delete named by its id (KIP-516): deleted as by its name, or refused
        without the name: an id no topic has is UNKNOWN_TOPIC_ID, a topic the client may
        not describe TOPIC_AUTHORIZATION_FAILED (Kafka's: ids are not secret, names are)."""
        name = self._metadata.topic_names.get(topic_id)
        error: ApiError
        if name is None or name not in self._metadata.topics:
            error = UnknownTopicIdError(
                f"no topic has id {format_topic_id(topic_id)} (deleted, or never made)"
            )
        elif not self._acl.allowed(Operation.DESCRIBE, ResourceType.TOPIC, name):
            error = TopicAuthorizationFailedError(
                f"{principal()} may not Describe the topic with id {format_topic_id(topic_id)}"
            )
        else:
            return await _with_id(deletion(name), topic_id)
        return DeletableTopicResult(
            name="", topic_id=topic_id, error_code=error.code, error_message=error.message
        )

    async def _delete(self, topic: str) -> DeletableTopicResult:
        try:
            self._check(Operation.DELETE, topic)
            if not self._config["delete.topic.enable"]:
                raise TopicDeletionDisabledError(
                    "topic deletion is disabled on this cluster (delete.topic.enable=false)"
                )
            made = await self._zk.exists(paths.topic(topic))
            if made is None:
                raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
            await self._ask_deletion(topic, made.czxid)
            self._log.info("topic.delete_requested", topic=topic)
        except ApiError as exc:
            return DeletableTopicResult(name=topic, error_code=exc.code, error_message=exc.message)
        return DeletableTopicResult(name=topic)

    async def _ask_deletion(self, topic: str, czxid: int) -> None:
        """The topic's deletion marker made (asking twice is asking once). After a lost
        answer it is made again only while the topic is still the one asked about
        (``czxid``): the controller may have deleted it on the marker already made, and a
        new topic may be under the name since (review 136)."""
        for _ in range(_CREATES):
            try:
                await self._zk.create(paths.delete_topic(topic), makepath=True)
                return
            except NodeExists:
                return
            except ZkConnectionLoss:
                still = await self._zk.exists(paths.topic(topic))
                if still is None or still.czxid != czxid:
                    return  # deleted meanwhile: by the marker whose answer was lost
        raise ZkConnectionLoss(
            f"the connection to ZooKeeper dropped with topic {topic!r}'s deletion out "
            f"{_CREATES} times in a row: it may or may not be deleted"
        )

    async def _until_gone(self, topic: str, deadline: float) -> bool:
        """Wait until the topic's znode is gone (the controller finished deleting it)."""
        loop = asyncio.get_running_loop()
        while True:
            gone: asyncio.Future[None] = loop.create_future()

            def fire(event: object, gone: asyncio.Future[None] = gone) -> None:
                if not gone.done():
                    gone.set_result(None)

            if await self._zk.exists(paths.topic(topic), watch=fire) is None:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(gone, remaining)
            except TimeoutError:
                return False

    # --- configs ------------------------------------------------------------------------

    async def _overrides(self, topic: str) -> dict[str, str]:
        return (await self._versioned_overrides(topic))[0]

    async def _versioned_overrides(self, topic: str) -> tuple[dict[str, str], int]:
        """The topic's overrides and their znode's version (CREATE: there is none)."""
        try:
            data, stat = await self._zk.get(paths.topic_config(topic))
        except NoNode:
            return {}, CREATE
        return topic_config_from_json(topic, data), int(stat.version)

    # --- config changes -----------------------------------------------------------------

    async def alter_configs(self, request: AlterConfigsRequest) -> AlterConfigsResponse:
        """AlterConfigs: each entity's overrides become exactly the ones given (Kafka's
        semantics: a config left out returns to its default)."""
        responses = []
        for r in request.resources:
            responses.append(
                await self._alter(
                    r.resource_type,
                    r.resource_name,
                    _replacing(r.configs),
                    request.validate_only,
                )
            )
        return AlterConfigsResponse(responses=responses)

    async def incremental_alter_configs(
        self, request: IncrementalAlterConfigsRequest
    ) -> IncrementalAlterConfigsResponse:
        """IncrementalAlterConfigs (KIP-339): SET, DELETE, APPEND, SUBTRACT single entries."""
        responses = []
        for r in request.resources:
            responses.append(
                await self._alter(
                    r.resource_type,
                    r.resource_name,
                    _incrementing(r.configs),
                    request.validate_only,
                )
            )
        return IncrementalAlterConfigsResponse(responses=responses)

    async def _alter(
        self,
        resource_type: int,
        name: str,
        change: Change,
        validate_only: bool,
    ) -> AlterConfigsResourceResponse:
        what = f"topic {name!r}"
        try:
            self._check_configs(Operation.ALTER_CONFIGS, resource_type, name)
            if resource_type == ConfigResourceType.BROKER:
                what = f"broker {name}" if name.strip() else "every broker's default"
                await self.broker_configs.change(name, change, validate_only)
            elif resource_type == ConfigResourceType.TOPIC:
                subject = topic_subject(name, self._config.log_config())
                await self._change_topic_config(
                    name, lambda current: change(subject, current), validate_only
                )
            elif resource_type == ConfigResourceType.GROUP:
                what = f"group {name!r}"
                group = group_subject(name, lambda setting: str(self._config[setting]))
                await self.group_configs.change(
                    name, lambda current: change(group, current), validate_only
                )
            else:
                raise InvalidRequestError(f"unknown config resource type {resource_type}")
        except ApiError as exc:
            return AlterConfigsResourceResponse(
                resource_type=resource_type,
                resource_name=name,
                error_code=exc.code,
                error_message=exc.message,
            )
        except ZkError as exc:  # the multi may or may not have landed: say so
            return AlterConfigsResourceResponse(
                resource_type=resource_type,
                resource_name=name,
                error_code=RequestTimedOutError.code,
                error_message=(
                    f"ZooKeeper did not answer ({exc}); the change to {what} may or may not "
                    "be made: describe its configs to see"
                ),
            )
        return AlterConfigsResourceResponse(resource_type=resource_type, resource_name=name)

    async def _change_topic_config(
        self, topic: str, plan: Callable[[dict[str, str]], dict[str, str]], validate_only: bool
    ) -> None:
        """Read, change, validate, then write with the notification (compare-and-set on the
        version read: a concurrent change makes us start over from what it wrote)."""
        tried = False  # a write went out (its answer may have been lost with the connection)
        for attempt in range(_CAS_ATTEMPTS):
            if attempt:  # lost a race: a jittered pause, so racers do not collide again
                await asyncio.sleep(random.uniform(0, _CAS_BACKOFF_S * attempt))
            if await self._zk.exists(paths.topic(topic)) is None:
                raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
            current, version = await self._versioned_overrides(topic)
            wanted = plan(current)
            try:
                self._config.log_config().with_properties(wanted)
            except ValueError as exc:
                raise InvalidConfigError(f"topic {topic!r}: {exc}") from None
            if validate_only or (wanted == current and not tried):
                return
            if wanted == current:  # made (ours, or a racer's the same)
                break
            tried = True
            if await self._zk.write_config(
                paths.topic_config(topic),
                wanted,
                version=version,
                notice=config_change_json(topic),
            ):
                break
        else:
            raise RequestTimedOutError(
                f"topic {topic!r}: its configs kept changing under this request; try again"
            )
        self._log.info("topic.config_changed", topic=topic, overrides=wanted)

    async def describe_configs(self, request: DescribeConfigsRequest) -> DescribeConfigsResponse:
        results = []
        for resource in request.resources:
            try:
                configs = await self._describe(resource, request.include_synonyms)
            except ApiError as exc:
                # one resource's refusal in an answer that is not (the server logs only
                # whole requests refused): an operator's tool that shows nothing says why here
                self._log.info(
                    "config.describe_refused",
                    resource_type=resource.resource_type,
                    resource=resource.resource_name,
                    error=exc.name,
                    message=exc.message,
                )
                results.append(
                    DescribeConfigsResult(
                        resource_type=resource.resource_type,
                        resource_name=resource.resource_name,
                        error_code=exc.code,
                        error_message=exc.message,
                    )
                )
                continue
            results.append(
                DescribeConfigsResult(
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                    configs=configs,
                )
            )
        return DescribeConfigsResponse(results=results)

    async def _describe(
        self, resource: DescribeConfigsResource, synonyms: bool
    ) -> list[DescribeConfigsEntry]:
        keys = resource.configuration_keys
        self._check_configs(
            Operation.DESCRIBE_CONFIGS, resource.resource_type, resource.resource_name
        )
        if resource.resource_type == ConfigResourceType.TOPIC:
            entries = await self._describe_topic(resource.resource_name, synonyms)
        elif resource.resource_type == ConfigResourceType.BROKER:
            entries = self.broker_configs.describe(resource.resource_name, synonyms)
        elif resource.resource_type == ConfigResourceType.GROUP:
            entries = await self.group_configs.describe(resource.resource_name, synonyms)
        else:
            raise InvalidRequestError(f"unknown config resource type {resource.resource_type}")
        return [e for e in entries if keys is None or e.name in keys]

    def _check(self, operation: Operation, topic: str) -> None:
        if not self._acl.allowed(operation, ResourceType.TOPIC, topic):
            raise topic_not_authorized(topic, operation)

    def _check_configs(self, operation: Operation, resource_type: int, name: str) -> None:
        if resource_type == ConfigResourceType.TOPIC:
            self._check(operation, name)
        elif resource_type == ConfigResourceType.BROKER:
            self._acl.check_cluster(operation, f"{operation.title} broker configs")
        elif resource_type == ConfigResourceType.GROUP:
            if not name:
                raise InvalidRequestError("a group config resource names its group")
            if not self._acl.allowed(operation, ResourceType.GROUP, name):
                raise group_not_authorized(name, operation)

    async def _describe_topic(self, topic: str, synonyms: bool) -> list[DescribeConfigsEntry]:
        if await self._zk.exists(paths.topic(topic)) is None:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        if self._topic_configs is None:
            overrides = await self._overrides(topic)
        else:
            overrides = await self._topic_configs.describe(topic)
        entries = []
        for name, default in LogConfig().properties().items():
            broker_name = TOPIC_CONFIG_SYNONYMS.get(name)
            value: str | None
            if broker_name is None:  # a topic's own (the throttled replicas): no broker's
                value = str(default).lower() if isinstance(default, bool) else str(default)
                source = ConfigSource.DEFAULT_CONFIG
                chain = [DescribeConfigsSynonym(name=name, value=value, source=source.value)]
            else:
                broker_entry = self.broker_configs.entry(broker_name)
                value = broker_entry.value
                source = ConfigSource(broker_entry.config_source)
                chain = self.broker_configs.synonyms(broker_name)
            if name in overrides:
                value, source = overrides[name], ConfigSource.DYNAMIC_TOPIC_CONFIG
                chain.insert(0, DescribeConfigsSynonym(name=name, value=value, source=source.value))
            entries.append(
                DescribeConfigsEntry(
                    name=name,
                    value=value,
                    config_source=source.value,
                    synonyms=chain if synonyms else [],
                    config_type=_config_type(name),
                )
            )
        return entries


class _ExistsInZooKeeper(TopicAlreadyExistsError):
    """TOPIC_ALREADY_EXISTS for a topic ZooKeeper has and this broker's metadata not yet."""


class _MutationGate:
    """The controller mutation quota over one request's topics, in their order (Kafka's
    strict mode, KIP-599): a topic is let through while the quota is not in debt, and
    takes its partitions even into debt; once in debt, the topics after it are refused
    with THROTTLING_QUOTA_EXCEEDED and the answer says how long to wait. A topic that
    fails for another reason gives its partitions back.

    Not ``strict`` (Kafka's permissive mode, for a Kafka client whose version of the API
    predates the error: CreateTopics v5-, DeleteTopics v4-, CreatePartitions v2-): every
    topic goes through and takes its partitions, and the answer's throttle says how long
    the client must wait."""

    def __init__(self, bucket: TokenBucket | None, *, strict: bool = True) -> None:
        self._bucket = bucket
        self._strict = strict
        self.throttle_ms = 0
        self._taken: dict[str, int] = {}
        self._refused: dict[str, int] = {}

    def over(self, topic: str, partitions: int) -> bool:
        if self._bucket is None or topic in self._taken:
            return False  # a name given twice is counted once (CreateTopics refuses it)
        now_ms = int(time.monotonic() * 1000)
        if not self._strict:
            self.throttle_ms = max(self.throttle_ms, self._bucket.record(partitions, now_ms))
            self._taken[topic] = partitions
            return False
        wait = self._bucket.take(partitions, now_ms)
        if wait:
            self._refused[topic] = wait
            self.throttle_ms = max(self.throttle_ms, wait)
            return True
        self._taken[topic] = partitions
        return False

    async def refused(self, topic: str, result: Callable[..., _R]) -> _R:
        error = ThrottlingQuotaExceededError(
            f"topic {topic!r}: over controller_mutation_rate (partitions created or deleted "
            f"per second); retry in {self._refused[topic]} ms"
        )
        return result(name=topic, error_code=error.code, error_message=error.message)

    async def counted(self, topic: str, work: Awaitable[_R]) -> _R:
        result = await work
        self._settle(topic, result)
        return result

    async def counted_pair(self, topic: str, work: Awaitable[tuple[_R, Any]]) -> tuple[_R, Any]:
        pair = await work
        self._settle(topic, pair[0])
        return pair

    def _settle(self, topic: str, result: object) -> None:
        if getattr(result, "error_code", 0) and self._bucket is not None:
            self._bucket.give_back(self._taken.pop(topic, 0))


async def _with_id(
    result: Awaitable[DeletableTopicResult], topic_id: bytes | None
) -> DeletableTopicResult:
    """The result, with the topic's id (Kafka's v6 answers it for a topic named too)."""
    done = await result
    if topic_id is not None:
        done.topic_id = topic_id
    return done


async def _paired(result: Awaitable[CreatePartitionsTopicResult]) -> tuple[Any, None]:
    return await result, None


async def _named_twice(topic: str) -> CreatableTopicResult:
    error = InvalidRequestError(f"topic {topic!r} is named more than once in the request")
    return CreatableTopicResult(name=topic, error_code=error.code, error_message=error.message)


def _partitions_of(topic: CreatableTopic, default: int) -> int:
    """How many partitions a CreateTopics entry makes (its assignment's, else its count,
    else the broker's num.partitions)."""
    if topic.assignments:
        return len(topic.assignments)
    return topic.num_partitions if topic.num_partitions > 0 else default


Change = Callable[[ConfigSubject, dict[str, str]], dict[str, str]]
"""What a request makes of an entity's overrides, given the entity and its overrides now."""


def _replacing(configs: list[AlterableConfig]) -> Change:
    return lambda subject, _current: replaced(subject, configs)


def _incrementing(ops: list[IncrementalAlterableConfig]) -> Change:
    return lambda subject, current: incremented(subject, current, ops)


def _config_type(name: str) -> str:
    """Kafka's config type name of a topic config, from its declared default."""
    if name in LIST_TOPIC_CONFIGS:
        return "list"
    default = LogConfig().properties()[name]
    kinds = {bool: "boolean", int: "long", float: "double", str: "string"}
    return kinds[type(default)]


def _new_partitions(
    topic: str,
    current: dict[int, list[int]],
    request: CreatePartitionsTopic,
    brokers: list[int],
    racks: Mapping[int, str | None] | None = None,
) -> dict[int, list[int]]:
    """The replicas of the partitions ``request`` adds to ``current`` (Kafka's
    AdminZkClient.addPartitions): given, and checked, or placed as a new topic's are, from
    where partition 0's leader stands among the brokers, so the leaders keep spreading."""
    have = len(current)
    if request.count < have:
        raise InvalidPartitionsError(
            f"topic {topic!r} has {have} partitions, more than the {request.count} asked for; "
            "partitions cannot be removed"
        )
    if request.count == have:
        raise InvalidPartitionsError(f"topic {topic!r} already has {have} partitions")
    first_replicas = current[min(current)]
    factor = len(first_replicas)
    first = range(have, request.count)
    if request.assignments is None:
        if factor > len(brokers):
            raise InvalidReplicationFactorError(
                f"topic {topic!r} has {factor} replicas per partition, more than the "
                f"{len(brokers)} live brokers; start brokers first"
            )
        leader = first_replicas[0]
        start = brokers.index(leader) if leader in brokers else None
        return assign_replicas(
            brokers,
            len(first),
            factor,
            racks=racks,
            start_index=start,
            replica_shift=start,
            first_partition=have,
        )
    if len(request.assignments) != len(first):
        raise InvalidReplicaAssignmentError(
            f"topic {topic!r}: {len(request.assignments)} replica assignments for "
            f"{len(first)} new partitions"
        )
    added = {p: list(a.broker_ids) for p, a in zip(first, request.assignments, strict=True)}
    for partition, replicas in added.items():
        if len(replicas) != factor:
            raise InvalidReplicaAssignmentError(
                f"topic {topic!r} partition {partition}: {len(replicas)} replicas; the "
                f"topic's partitions have {factor}"
            )
        _check_replicas(topic, partition, replicas, brokers)
    return added


def _check_replicas(topic: str, partition: int, replicas: list[int], brokers: list[int]) -> None:
    if len(set(replicas)) != len(replicas):
        raise InvalidReplicaAssignmentError(
            f"topic {topic!r} partition {partition}: a broker is listed twice"
        )
    unknown = [b for b in replicas if b not in brokers]
    if unknown:
        raise InvalidReplicaAssignmentError(
            f"topic {topic!r} partition {partition}: no live broker {unknown}"
        )


async def _refused_creation(topic: str) -> CreatableTopicResult:
    error = topic_not_authorized(topic, Operation.CREATE)
    return CreatableTopicResult(name=topic, error_code=error.code, error_message=error.message)

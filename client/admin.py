"""Cluster administration: topics, the cluster's brokers and controller, topic configs,
consumer groups and their offsets, partitions' offsets.

Shaped like aiokafka's AIOKafkaAdminClient, with answers as the NamedTuples of
:mod:`client.types`. CreateTopics, CreatePartitions and DeleteTopics go to the
controller, as Kafka's admin client sends them (its broker counts a user's
controller_mutation_rate for the cluster); any broker takes them when the controller
cannot be reached. A broker's own configs are described and changed through that broker;
other requests go to whichever broker answers. A refused topic raises its typed error
(TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS, ...) with a message naming the topic; when
several are refused, one of them is raised.

Groups, as Kafka's AdminClient does them: each broker lists only the groups it
coordinates, so ``list_groups`` asks every broker and merges; DescribeGroups, OffsetFetch,
OffsetCommit and DeleteGroups go to the group's coordinator
(:class:`client.coordinator.GroupOffsets` finds it and follows it when it moves).
ListOffsets goes to each partition's leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from client.assignors import ProtocolError, decode_assignment
from client.cluster import (
    STALLED_S,
    Cluster,
    ClusterMetadata,
    list_offsets_request,
    unknown_topic_error,
)
from client.coordinator import CoordinatorLine, GroupOffsets
from client.errors import ClientClosedError, ConfigurationError
from client.security import TokenProvider, security_for
from client.types import (
    AlterConfigOp,
    BrokerDescription,
    ClusterDescription,
    ConfigEntry,
    ConfigResource,
    ConfigSynonym,
    DelegationToken,
    GroupDescription,
    GroupListing,
    ListOffsetsResult,
    LogDirDescription,
    MemberDescription,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    PartitionDescription,
    PartitionReassignment,
    ProducerState,
    ReplicaInfo,
    ScramCredentialInfo,
    ShareGroupDescription,
    ShareMemberDescription,
    SharePartitionOffset,
    TopicDescription,
    TopicPartition,
    TopicPartitionReplica,
    TransactionDescription,
    TransactionListing,
    UserScramCredentialDeletion,
    UserScramCredentialsDescription,
    UserScramCredentialUpsertion,
    partition_names,
)
from protocol.acls import (
    AclBinding,
    AclBindingFilter,
    AclError,
    Operation,
    PatternType,
    Permission,
    ResourceType,
)
from protocol.apis import (
    SCRAM_MECHANISM_CODES,
    AclCreation,
    AlterableConfig,
    AlterClientQuotasEntry,
    AlterClientQuotasRequest,
    AlterClientQuotasResponse,
    AlterConfigsRequest,
    AlterConfigsResource,
    AlterConfigsResourceResponse,
    AlterConfigsResponse,
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
    AlterReplicaLogDir,
    AlterReplicaLogDirsRequest,
    AlterReplicaLogDirsResponse,
    AlterReplicaLogDirTopic,
    AlterUserScramCredentialsRequest,
    AlterUserScramCredentialsResponse,
    ApiKey,
    ConfigResourceType,
    ConfigSource,
    CoordinatorType,
    CreatableTopic,
    CreatableTopicConfig,
    CreateAclsRequest,
    CreateAclsResponse,
    CreateDelegationTokenRequest,
    CreateDelegationTokenResponse,
    CreatePartitionsAssignment,
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    CreatePartitionsTopic,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteAclsFilter,
    DeleteAclsRequest,
    DeleteAclsResponse,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DeleteRecordsPartition,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteRecordsTopic,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribableLogDirTopic,
    DescribeAclsRequest,
    DescribeAclsResponse,
    DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    DescribeConfigsResponse,
    DescribeDelegationTokenRequest,
    DescribeDelegationTokenResponse,
    DescribedGroup,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    DescribeLogDirsRequest,
    DescribeLogDirsResponse,
    DescribeProducersRequest,
    DescribeProducersResponse,
    DescribeProducersTopic,
    DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse,
    DescribeTransactionsRequest,
    DescribeTransactionsResponse,
    DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse,
    ElectionType,
    ElectLeadersRequest,
    ElectLeadersResponse,
    ElectLeadersTopicPartitions,
    ExpireDelegationTokenRequest,
    ExpireDelegationTokenResponse,
    IncrementalAlterableConfig,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResource,
    IncrementalAlterConfigsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    ListOffsetsResponse,
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
    ListPartitionReassignmentsTopics,
    ListTransactionsRequest,
    ListTransactionsResponse,
    MetadataRequest,
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
    OffsetDeleteResponse,
    OffsetFetchRequest,
    OffsetFetchRequestTopic,
    OffsetFetchResponse,
    QuotaEntityPart,
    QuotaFilterComponent,
    QuotaOp,
    ReassignablePartition,
    ReassignableTopic,
    RenewDelegationTokenRequest,
    RenewDelegationTokenResponse,
    ScramCredentialDeletion,
    ScramCredentialUpsertion,
    ShareGroupDescribeRequest,
    ShareGroupDescribeResponse,
    TokenPrincipal,
    UserName,
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
)
from protocol.apis import AlterConfigOp as OpType
from protocol.errors import (
    ApiError,
    BrokerNotAvailableError,
    ElectionNotNeededError,
    GroupIdNotFoundError,
    GroupSubscribedToTopicError,
    IllegalGenerationError,
    LeaderNotAvailableError,
    NetworkError,
    NonEmptyGroupError,
    NotControllerError,
    RebalanceInProgressError,
    RequestTimedOutError,
    ThrottlingQuotaExceededError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
    error_for_code,
)
from protocol.quotas import CLIENT, IP, IP_QUOTA_KEYS, USER, Entity
from protocol.sasl import SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS, salted_password
from protocol.topic_id import ZERO_TOPIC_ID, format_topic_id, parse_topic_id

__all__ = ["ANY_ENTITY", "Admin"]


class _Any:
    def __repr__(self) -> str:
        return "ANY_ENTITY"


ANY_ENTITY = _Any()
"""``describe_client_quotas``: any entity of that type, or none."""

_SCRAM_NAMES = {code: name for name, code in SCRAM_MECHANISM_CODES.items()}

_POLL_FIRST_S = 0.01
_POLL_MAX_S = 0.2
"""How soon a broker that has not yet applied an ACL or token change is asked again: it
reads ZooKeeper's notification within milliseconds, as a rule."""

_log = logging.getLogger("headwater.client.admin")

R = TypeVar("R")


class _Refused(NamedTuple):
    """A partition's answer that is final and an error (not retried)."""

    error: ApiError


class Admin:
    """``async with Admin(bootstrap_servers=...) as admin: await admin.list_topics()``."""

    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str],
        client_id: str = "headwater-admin",
        request_timeout_ms: int = 30_000,
        retry_backoff_ms: int = 100,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        sasl_mechanism: str = "PLAIN",
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        sasl_oauth_token_provider: TokenProvider | None = None,
        sasl_token_auth: bool = False,
        sasl_kerberos_service_name: str = "kafka",
        sasl_kerberos_domain_name: str | None = None,
        sasl_kerberos_keytab: str | None = None,
        sasl_kerberos_principal: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.retry_backoff_ms = retry_backoff_ms
        self._made: dict[str, tuple[int, float]] = {}
        """Topics this admin made or grew: name -> (partitions it has now, until when
        (monotonic s) a broker that does not know that yet is asked again): read your
        own writes (see :meth:`_created`)."""
        tls, login = security_for(
            security_protocol,
            ssl_context,
            sasl_mechanism,
            sasl_plain_username,
            sasl_plain_password,
            sasl_oauth_token_provider=sasl_oauth_token_provider,
            sasl_token_auth=sasl_token_auth,
            sasl_kerberos_service_name=sasl_kerberos_service_name,
            sasl_kerberos_domain_name=sasl_kerberos_domain_name,
            sasl_kerberos_keytab=sasl_kerberos_keytab,
            sasl_kerberos_principal=sasl_kerberos_principal,
        )
        self._cluster = Cluster(
            bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            allow_auto_topic_creation=False,
            tls=tls,
            login=login,
        )
        self._state = "new"

    async def start(self) -> None:
        if self._state != "new":
            raise ClientClosedError(f"the admin client is {self._state}; start() runs once")
        await self._cluster.start()
        self._state = "running"

    async def close(self) -> None:
        self._state = "stopped"
        await self._cluster.close()

    async def __aenter__(self) -> Admin:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- topics --------------------------------------------------------------------------

    async def create_topics(
        self, new_topics: list[NewTopic], timeout_ms: int = 30_000, validate_only: bool = False
    ) -> None:
        """Create the topics; returns once the brokers know their leaders (or raises).
        Topics refused by a controller_mutation_rate quota (THROTTLING_QUOTA_EXCEEDED) are
        asked for again once the throttle time has passed, until ``timeout_ms`` (Kafka's
        retryOnQuotaViolation)."""
        request = CreateTopicsRequest(
            topics=[
                CreatableTopic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs=[
                        CreatableTopicConfig(name=k, value=v) for k, v in t.topic_configs.items()
                    ],
                )
                for t in new_topics
            ],
            timeout_ms=timeout_ms,
            validate_only=validate_only,
        )
        response: CreateTopicsResponse = await self._until_unthrottled(
            ApiKey.CREATE_TOPICS, request, "topics", "topics", timeout_ms
        )
        wanted = {t.name: t.num_partitions for t in new_topics}
        for result in response.topics:
            if not result.error_code and not validate_only:
                self._wrote(result.name, max(wanted.get(result.name, 1), 1))
        for result in response.topics:
            if result.error_code == TopicAlreadyExistsError.code:
                raise TopicAlreadyExistsError(
                    result.error_message or f"topic {result.name!r} already exists"
                )
            if result.error_code:
                raise error_for_code(
                    result.error_code,
                    result.error_message or f"topic {result.name!r} was not created",
                )

    async def create_partitions(
        self,
        new_partitions: Mapping[str, NewPartitions],
        timeout_ms: int = 30_000,
        validate_only: bool = False,
    ) -> None:
        """Grow each topic to ``NewPartitions.total_count`` partitions; returns once the
        brokers know the new partitions' leaders (or raises). Partitions are never removed.
        A keyed record may go to another partition afterwards (the partitioner hashes over
        the new count), and consumer groups subscribed to the topic rebalance onto them."""
        request = CreatePartitionsRequest(
            topics=[
                CreatePartitionsTopic(
                    name=name,
                    count=p.total_count,
                    assignments=None
                    if p.new_assignments is None
                    else [
                        CreatePartitionsAssignment(broker_ids=list(replicas))
                        for replicas in p.new_assignments
                    ],
                )
                for name, p in new_partitions.items()
            ],
            timeout_ms=timeout_ms,
            validate_only=validate_only,
        )
        response: CreatePartitionsResponse = await self._until_unthrottled(
            ApiKey.CREATE_PARTITIONS, request, "topics", "results", timeout_ms
        )
        for result in response.results:
            if not result.error_code and not validate_only:
                self._wrote(result.name, new_partitions[result.name].total_count)
        for result in response.results:
            if result.error_code:
                raise error_for_code(
                    result.error_code,
                    result.error_message or f"topic {result.name!r} did not get its partitions",
                )

    async def delete_topics(
        self,
        topics: list[str] | None = None,
        timeout_ms: int = 30_000,
        *,
        topic_ids: list[str] | None = None,
    ) -> None:
        """Delete the topics; returns once they are gone (or raises). Throttled ones are
        asked for again, as :meth:`create_topics` does. ``topic_ids`` (Kafka's text form)
        names them by id instead (KIP-516): a topic of the same name made since the one
        meant was deleted is not deleted (``UnknownTopicIdError``)."""
        if (topics is None) == (topic_ids is None):
            raise ValueError("delete topics by names or by topic_ids (one of them)")
        if topic_ids is not None:
            topic_ids = list(dict.fromkeys(topic_ids))  # an answer each: asked once each
            request = DeleteTopicsRequest(
                topic_ids=[parse_topic_id(t) for t in topic_ids], timeout_ms=timeout_ms
            )
            asked, by = "topic_ids", "topic_id"
        else:
            request = DeleteTopicsRequest(topic_names=list(topics or ()), timeout_ms=timeout_ms)
            asked, by = "topic_names", "name"
        response: DeleteTopicsResponse = await self._until_unthrottled(
            ApiKey.DELETE_TOPICS, request, asked, "responses", timeout_ms, by=by
        )
        for result in response.responses:
            self._made.pop(result.name or "", None)
        if topic_ids is not None and len(response.responses) < len(topic_ids):
            raise UnsupportedVersionError(  # a broker of a build before ids reads none
                "the brokers do not know topics by id; upgrade them, or delete by name"
            )
        for result in response.responses:
            if result.error_code == UnknownTopicOrPartitionError.code:
                raise UnknownTopicOrPartitionError(f"topic {result.name!r} does not exist")
            if result.error_code:
                raise error_for_code(
                    result.error_code,
                    result.error_message or f"topic {result.name!r} was not deleted",
                )

    async def _until_unthrottled(
        self,
        api_key: ApiKey,
        request: Any,
        asked: str,
        answered: str,
        timeout_ms: int,
        *,
        by: str = "name",
    ) -> Any:
        """Send a topic mutation; the topics a controller_mutation_rate quota refused go
        again (alone) after the answer's throttle time, while ``timeout_ms`` allows. The
        answer returned holds every topic's last result (told apart by their ``by``: the
        name, or the topic id of those asked by id)."""
        deadline = time.monotonic() + timeout_ms / 1000
        results: dict[Any, Any] = {}
        while True:
            response = await self._to_controller(api_key, request)
            throttled = set()
            for result in getattr(response, answered):
                results[getattr(result, by)] = result
                if result.error_code == ThrottlingQuotaExceededError.code:
                    throttled.add(getattr(result, by))
            wait_s = max(response.throttle_time_ms, self.retry_backoff_ms) / 1000
            if not throttled or time.monotonic() + wait_s > deadline:
                setattr(response, answered, list(results.values()))
                return response
            await asyncio.sleep(wait_s)
            again = [t for t in getattr(request, asked) if getattr(t, "name", t) in throttled]
            left_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            request = dataclasses.replace(request, **{asked: again, "timeout_ms": left_ms})

    async def _to_controller(self, api_key: ApiKey, request: Any) -> Any:
        """A topic mutation goes to the controller, as Kafka's admin client sends it: its
        broker counts a user's controller_mutation_rate for the whole cluster. Any broker
        takes one (the brokers write the topic's znodes themselves), so with no controller
        known, or one that just stepped down, another does."""
        metadata = await self._metadata([])
        controller = metadata.controller_id
        if controller in metadata.brokers:
            try:
                await self._cluster.connect(controller)
            except NetworkError:  # not reached, so not sent: another broker takes it
                return await self._send(api_key, request, idempotent=False)
            try:
                return await self._cluster.send(controller, api_key, request)
            except (NotControllerError, LeaderNotAvailableError):
                pass  # not taken: any broker will do
        return await self._send(api_key, request, idempotent=False)

    async def list_topics(self) -> list[str]:
        """Every topic's name, sorted, internal ones included; one this admin made within
        ``request_timeout_ms`` is waited for (read your writes, as ``describe_topics``)."""
        metadata = await self._created(None)
        return sorted(metadata.topics)

    async def describe_topics(
        self, names: list[str] | None = None, *, topic_ids: list[str] | None = None
    ) -> list[TopicDescription]:
        """Leaders, replicas and ISR per partition; an unknown name raises (with what to do).
        ``topic_ids`` (Kafka's text form, as ``TopicDescription.topic_id``) describes topics
        by id instead (KIP-516): an id no topic has raises ``UnknownTopicIdError``, so a
        topic deleted and made again under its name is not taken for the old one."""
        if topic_ids is not None:
            if names is not None:
                raise ValueError("describe topics by names or by topic_ids, not both")
            return await self._describe_by_id(topic_ids)
        metadata = await self._created(names)
        for name in names or []:
            error = metadata.topic_errors.get(name)
            if isinstance(error, UnknownTopicOrPartitionError):
                raise unknown_topic_error(name)
            if error is not None:
                raise error
        wanted = names if names is not None else sorted(metadata.topics)
        out = []
        for name in wanted:
            topic = metadata.topics[name]
            partitions = [
                PartitionDescription(
                    p.partition,
                    p.leader,
                    p.leader_epoch,
                    list(p.replicas),
                    list(p.isr),
                    list(p.offline_replicas),
                )
                for p in sorted(topic.partitions.values(), key=lambda p: p.partition)
            ]
            topic_id = None if topic.topic_id == ZERO_TOPIC_ID else format_topic_id(topic.topic_id)
            out.append(TopicDescription(name, topic.is_internal, partitions, topic_id))
        return out

    def _wrote(self, topic: str, partitions: int) -> None:
        self._made[topic] = (partitions, time.monotonic() + self.request_timeout_ms / 1000)

    def _behind(self, metadata: ClusterMetadata, names: list[str] | None) -> bool:
        """Whether the broker that answered has not yet heard of a topic this admin made
        or grew (a broker a moment behind the controller: CreateTopics and
        CreatePartitions answer once the broker that took them knows)."""
        now = time.monotonic()
        for name, (partitions, until) in list(self._made.items()):
            if until < now:
                del self._made[name]
            elif names is None or name in names:
                topic = metadata.topics.get(name)
                if topic is None or len(topic.partitions) < partitions:
                    return True
        return False

    async def _created(self, names: list[str] | None) -> ClusterMetadata:
        """Metadata for ``names``, asked again while one is being created
        (LEADER_NOT_AVAILABLE: the controller has it and the broker asked does not yet),
        for up to ``request_timeout_ms``, as Kafka's admin retries a retriable error until
        its timeout. A topic no broker knows is not waited for: that is an answer, unless
        this admin made it (or grew it) in the last ``request_timeout_ms``: then the
        broker asked is behind, and is asked again until it knows (read your writes:
        Kafka's admin leaves that to its caller, who then sees a topic it just made
        missing, or with its old partition count)."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        while True:
            metadata = await self._metadata(names)
            if not any(
                isinstance(metadata.topic_errors.get(name), LeaderNotAvailableError)
                for name in names or []
            ) and not self._behind(metadata, names):
                return metadata
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return metadata  # (raised below, as the broker said it)
            await asyncio.sleep(min(self.retry_backoff_ms / 1000, remaining_s))

    async def _describe_by_id(self, topic_ids: list[str]) -> list[TopicDescription]:
        raw = [parse_topic_id(t) for t in topic_ids]
        answer = await self._send(
            ApiKey.METADATA,
            MetadataRequest(topics=[], topic_ids=raw, allow_auto_topic_creation=False),
        )
        found = {t.topic_id: t for t in answer.topics}
        out = []
        for topic_id, text in zip(raw, topic_ids, strict=True):
            topic = found.get(topic_id)
            if topic is None:  # a broker of a build before ids reads no topic_ids
                raise UnsupportedVersionError(
                    "the brokers do not know topics by id; upgrade them, or describe by name"
                )
            if topic.error_code:
                raise error_for_code(topic.error_code, topic.error_message)
            partitions = [
                PartitionDescription(
                    p.partition_index,
                    p.leader_id,
                    p.leader_epoch,
                    list(p.replica_nodes),
                    list(p.isr_nodes),
                    list(p.offline_replicas),
                )
                for p in sorted(topic.partitions, key=lambda p: p.partition_index)
            ]
            out.append(TopicDescription(topic.name, topic.is_internal, partitions, text))
        return out

    async def describe_cluster(self) -> ClusterDescription:
        metadata = await self._metadata([])
        brokers = [
            BrokerDescription(b.node_id, b.host, b.port, b.rack)
            for b in sorted(metadata.brokers.values(), key=lambda b: b.node_id)
        ]
        return ClusterDescription(metadata.cluster_id, metadata.controller_id, brokers)

    async def describe_configs(self, resource: str | ConfigResource) -> dict[str, ConfigEntry]:
        """A topic's settings (its name, or ``ConfigResource("topic", name)``) or a
        broker's (``ConfigResource("broker", "1")``: every setting broker 1 has in force;
        ``ConfigResource("broker", "")``: the ones set as every broker's default), each with
        where its value comes from and, in ``synonyms``, every value it has."""
        if isinstance(resource, str):
            resource = ConfigResource("topic", resource)
        kind = _resource_type(resource.resource_type)
        request = DescribeConfigsRequest(
            resources=[DescribeConfigsResource(resource_type=kind, resource_name=resource.name)],
            include_synonyms=True,
            include_documentation=True,
        )
        node = _broker_node(kind, resource.name)
        response: DescribeConfigsResponse = (
            await self._send(ApiKey.DESCRIBE_CONFIGS, request)
            if node is None
            else await self._to_broker(node, ApiKey.DESCRIBE_CONFIGS, request)
        )
        out: dict[str, ConfigEntry] = {}
        for result in response.results:
            if (
                kind == ConfigResourceType.TOPIC
                and result.error_code == UnknownTopicOrPartitionError.code
            ):
                raise unknown_topic_error(resource.name)
            if result.error_code:
                raise error_for_code(result.error_code, result.error_message)
            for entry in result.configs:
                out[entry.name] = ConfigEntry(
                    entry.name,
                    entry.value,
                    _source_name(entry.config_source),
                    entry.read_only,
                    entry.is_sensitive,
                    tuple(
                        ConfigSynonym(y.name, y.value, _source_name(y.source))
                        for y in entry.synonyms
                    ),
                    entry.documentation,
                )
        return out

    async def alter_configs(
        self, resources: Iterable[ConfigResource], *, validate_only: bool = False
    ) -> None:
        """AlterConfigs (aiokafka's ``alter_configs``): each resource's overrides become
        exactly its ``configs``; settings left out return to their defaults. Every broker
        applies the change live; a change of a topic's configs or every broker's default
        returns once every broker has it (see :meth:`_configs_everywhere`). A refusal
        (INVALID_CONFIG with the reason, UNKNOWN_TOPIC_OR_PARTITION, ...) raises; with
        several, the first."""
        wanted = [
            AlterConfigsResource(
                resource_type=_resource_type(r.resource_type),
                resource_name=r.name,
                configs=[AlterableConfig(name=k, value=v) for k, v in (r.configs or {}).items()],
            )
            for r in resources
        ]
        groups, picked = await self._config_groups(wanted, replaces=not validate_only)
        answers: list[AlterConfigsResponse] = await asyncio.gather(
            *(
                self._config_request(
                    node,
                    ApiKey.ALTER_CONFIGS,
                    AlterConfigsRequest(resources=group, validate_only=validate_only),
                    picked=picked,
                )
                for node, group in groups.items()
            )
        )
        _raise_alter_errors([r for answer in answers for r in answer.responses])
        if picked is not None and not validate_only:
            await self._configs_everywhere(picked)

    async def incremental_alter_configs(
        self,
        changes: Mapping[ConfigResource, Iterable[AlterConfigOp]],
        *,
        validate_only: bool = False,
    ) -> None:
        """IncrementalAlterConfigs (Kafka's ``incrementalAlterConfigs``): change single
        settings, leave the others as they are::

            await admin.incremental_alter_configs({
                ConfigResource("topic", "orders"): [
                    AlterConfigOp("retention.ms", "3600000"),       # SET
                    AlterConfigOp("segment.bytes", op_type="DELETE"),  # back to the default
                ]
            })

        It returns once every broker has the change, as :meth:`alter_configs`.
        """
        resources = [
            IncrementalAlterConfigsResource(
                resource_type=_resource_type(r.resource_type),
                resource_name=r.name,
                configs=[
                    IncrementalAlterableConfig(
                        name=op.name, config_operation=_op_type(op.op_type), value=op.value
                    )
                    for op in ops
                ],
            )
            for r, ops in changes.items()
        ]
        # APPEND and SUBTRACT applied twice are not applied once: no blind resend of those
        idempotent = validate_only or all(
            c.config_operation in (OpType.SET, OpType.DELETE) for r in resources for c in r.configs
        )
        groups, picked = await self._config_groups(resources, replaces=False)
        answers: list[IncrementalAlterConfigsResponse] = await asyncio.gather(
            *(
                self._config_request(
                    node,
                    ApiKey.INCREMENTAL_ALTER_CONFIGS,
                    IncrementalAlterConfigsRequest(resources=group, validate_only=validate_only),
                    idempotent=idempotent,
                    picked=picked,
                )
                for node, group in groups.items()
            )
        )
        _raise_alter_errors([r for answer in answers for r in answer.responses])
        if picked is not None and not validate_only:
            await self._configs_everywhere(picked)

    async def _config_groups(
        self, resources: list[Any], *, replaces: bool
    ) -> tuple[dict[int | None, list[Any]], _Picked | None]:
        """The resources grouped by the broker that must take them (:func:`_by_node`;
        None: any broker); and, for those any broker may take (topics, every broker's
        default), the broker picked to take them: the first that can be reached, those
        connected first, lowest id first. The others are then waited for until they
        describe those as it does (see :meth:`_configs_everywhere`). ``replaces``:
        AlterConfigs, which also drops the defaults it does not name (those are compared
        too)."""
        groups = _by_node(resources)
        anywhere = groups.get(None, [])
        if not anywhere:
            return groups, None
        defaults = [
            r
            for r in anywhere
            if r.resource_type == ConfigResourceType.BROKER and not r.resource_name.strip()
        ]
        touched = frozenset(c.name for r in defaults for c in r.configs) if defaults else None
        # (a group's overrides are read from ZooKeeper where described: no wait for them)
        topics = tuple(
            dict.fromkeys(
                r.resource_name for r in anywhere if r.resource_type == ConfigResourceType.TOPIC
            )
        )
        for node in self._pick_order((await self._metadata([])).brokers):
            try:
                await self._cluster.connect(node)  # (its errors: nothing was sent)
            except ApiError:
                continue  # down, or gone: the next one
            if replaces and touched is not None:
                try:
                    touched |= (await self._defaults_at(node)).keys()
                except (NetworkError, RequestTimedOutError):
                    continue  # gone since, or not answering: the next one
                except ApiError:
                    pass  # it may not describe them: the change's answer will say why
            return groups, _Picked(node, touched, topics)
        return groups, None  # none can be reached: any broker, as before, and no wait

    def _pick_order(self, brokers: Iterable[int]) -> list[int]:
        """Brokers connected and answering first, then the others, then those with a
        request unanswered for :data:`~client.cluster.STALLED_S` (paused, overloaded), each
        by id: as :meth:`Cluster.send_any` tries them."""
        now = asyncio.get_running_loop().time()

        def rank(node: int) -> tuple[int, int]:
            conn = self._cluster.connection_now(node)
            if conn is None:
                return 1, node
            since = conn.waiting_since()
            return (2 if since is not None and now - since > STALLED_S else 0), node

        return sorted(brokers, key=rank)

    async def _defaults_at(self, node: int) -> dict[str, str | None]:
        """Broker ``node``'s every-broker defaults (DescribeConfigs of broker ``""``)."""
        answer = await self._cluster.send(node, ApiKey.DESCRIBE_CONFIGS, _DEFAULTS_PROBE)
        return _defaults_of(answer)

    async def _configs_everywhere(self, picked: _Picked) -> None:
        """Until every broker describes the topics and the defaults changed as the broker
        that took the change does, for up to ``request_timeout_ms`` (see
        :meth:`_on_every_broker` for what is not waited for).

        That broker applied a default before it answered, and wrote a topic's change to
        ZooKeeper, whose answers to its own session then show it; the others read both
        from ZooKeeper's notification a moment later, as Kafka's do, whose admin returns
        at once: a default lowered, or a topic's ``max.message.bytes`` or
        ``min.insync.replicas`` changed, a moment ago may not be in force yet where the
        next record goes. Every broker's defaults are its own copy, what it applies. A
        topic's are read from ZooKeeper when asked, and a broker with a log of the topic
        applies what it reads if it is newer than what it holds, and answers what it
        holds if it cannot apply it (:meth:`broker.dynamic_config.TopicConfigs.describe`),
        so its answer is true of its logs. A broker of an older version answers
        ZooKeeper's copy without applying it: it is not waited for in effect.

        Values are compared as the brokers show them (their own spelling of a value).
        Of the defaults, only the settings the change touched are compared, so a default
        another broker leaves out (a newer version's, ``broker_config.ignored``) holds up
        nothing; of a topic, whether each setting both brokers know is the topic's own
        and, if so, its value (a setting left to the broker's default may differ between
        brokers, each with its own). A resource a broker refuses to describe is not waited
        for on that broker (a topic deleted meanwhile: silently), nor are the others, if
        it refuses them all."""
        changed = ["every broker's default configs"] if picked.touched is not None else []
        if picked.topics:
            changed.append(f"the configs of topic(s) {', '.join(picked.topics)}")
        what = f"{' and '.join(changed)} changed"
        if picked.stood_in:
            _log.warning(
                "%s; whether every broker has applied it is unknown: broker %d, picked to "
                "take it, could not, and another did",
                what,
                picked.node,
            )
            return
        probe = DescribeConfigsRequest(
            resources=[
                *(_DEFAULTS_PROBE.resources if picked.touched is not None else []),
                *(
                    DescribeConfigsResource(resource_type=ConfigResourceType.TOPIC, resource_name=t)
                    for t in picked.topics
                ),
            ]
        )
        try:
            expected = _described(
                await self._cluster.send(picked.node, ApiKey.DESCRIBE_CONFIGS, probe), picked
            )
        except Exception as exc:  # (the change stands: said, not raised)
            _log.warning("%s; whether every broker has applied it is unknown: %s", what, exc)
            return

        def applied(answer: DescribeConfigsResponse) -> bool:
            held = _described(answer, picked)
            for resource, settings in expected.items():
                theirs = held.get(resource)
                if theirs is not None and any(
                    theirs[n] != settings[n] for n in theirs.keys() & settings.keys()
                ):
                    return False
            return True

        await self._on_every_broker(ApiKey.DESCRIBE_CONFIGS, probe, applied, what)

    async def _config_request(
        self,
        node: int | None,
        api_key: ApiKey,
        request: object,
        *,
        idempotent: bool = True,
        picked: _Picked | None = None,
    ) -> Any:
        """``request`` to broker ``node``, or (None) to the broker ``picked``, else any.
        If the broker picked cannot be reached after all, another takes the change (the
        wait then has no answer to agree with, and says so)."""
        if node is not None:
            return await self._to_broker(node, api_key, request, idempotent=idempotent)
        if picked is not None:
            try:
                await self._cluster.connect(picked.node)
            except ApiError:  # gone since it was picked: nothing was sent
                picked.stood_in = True
            else:
                try:
                    return await self._cluster.send(picked.node, api_key, request)
                except (NetworkError, RequestTimedOutError):
                    if not idempotent:
                        raise  # (it may have been made: an APPEND made twice is not once)
                    picked.stood_in = True
        return await self._send(api_key, request, idempotent=idempotent)

    async def _to_broker(
        self, node: int, api_key: ApiKey, request: object, *, idempotent: bool = True
    ) -> Any:
        """A request only broker ``node`` can answer (its own configs)."""
        self._check_running()
        if node not in (await self._metadata([])).brokers:
            raise BrokerNotAvailableError(
                f"broker {node} is not in the cluster (not registered, or down); "
                "`headwater cluster status` or describe_cluster() lists the live ones"
            )
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        while True:
            try:
                return await self._cluster.send(node, api_key, request)
            except ApiError as exc:
                if not (exc.retriable and idempotent) or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(self.retry_backoff_ms / 1000)

    # --- consumer groups -----------------------------------------------------------------

    async def list_groups(self) -> list[GroupListing]:
        """Every group the cluster knows, sorted by id. Each broker lists the groups it
        coordinates, so every broker is asked and the answers merged (a group whose
        coordinator moves meanwhile may be listed by both: it is shown once)."""
        metadata = await self._metadata([])
        answers = await asyncio.gather(*(self._groups_of(node) for node in metadata.brokers))
        merged: dict[str, GroupListing] = {}
        for listing in (g for answer in answers for g in answer):
            merged.setdefault(listing.group_id, listing)
        return [merged[g] for g in sorted(merged)]

    async def _groups_of(self, node: int) -> list[GroupListing]:
        """One broker's groups (a broker that left has none: their new coordinator lists
        them)."""
        response: ListGroupsResponse | None = await self._each_broker(
            node, ApiKey.LIST_GROUPS, ListGroupsRequest()
        )
        if response is None:
            return []
        return [GroupListing(g.group_id, g.protocol_type, g.group_state) for g in response.groups]

    async def _each_broker(self, node: int, api_key: ApiKey, request: object) -> Any:
        """One broker's answer to what every broker answers for its own part (ListGroups,
        ListTransactions), asked again while it loads or cannot be reached; None if it
        left the cluster meanwhile."""
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        while True:
            try:
                return await self._cluster.send(node, api_key, request)
            except ApiError as exc:
                if not exc.retriable or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(self.retry_backoff_ms / 1000)
                if node not in (await self._metadata([])).brokers:
                    return None

    # --- transactions (kafka-transactions) -----------------------------------------------

    async def list_transactions(
        self,
        states: Iterable[str] = (),
        producer_ids: Iterable[int] = (),
        *,
        duration_filter_ms: int = -1,
    ) -> list[TransactionListing]:
        """Kafka's AdminClient.listTransactions: every transactional id the coordinators
        hold, sorted, optionally only those in ``states`` (Kafka's names: Ongoing,
        PrepareCommit, ...), of ``producer_ids``, or whose transaction has run longer than
        ``duration_filter_ms`` (KIP-994). Every broker is asked for its own."""
        request = ListTransactionsRequest(
            state_filters=list(states),
            producer_id_filters=list(producer_ids),
            duration_filter=duration_filter_ms,
        )
        metadata = await self._metadata([])
        answers: list[ListTransactionsResponse | None] = await asyncio.gather(
            *(
                self._each_broker(node, ApiKey.LIST_TRANSACTIONS, request)
                for node in metadata.brokers
            )
        )
        merged: dict[str, TransactionListing] = {}
        for answer in answers:
            if answer is None:
                continue
            if answer.unknown_state_filters:
                raise ValueError(
                    f"unknown transaction states {answer.unknown_state_filters}; use Kafka's: "
                    "Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort"
                )
            for t in answer.transaction_states:
                merged.setdefault(
                    t.transactional_id,
                    TransactionListing(t.transactional_id, t.producer_id, t.transaction_state),
                )
        return [merged[t] for t in sorted(merged)]

    async def describe_transactions(
        self, transactional_ids: Iterable[str]
    ) -> list[TransactionDescription]:
        """Kafka's AdminClient.describeTransactions, from each id's coordinator; an unknown
        id raises :class:`~protocol.errors.TransactionalIdNotFoundError`."""
        return list(
            await asyncio.gather(*(self._describe_transaction(t) for t in transactional_ids))
        )

    async def _describe_transaction(self, txn_id: str) -> TransactionDescription:
        self._check_running()
        line = CoordinatorLine(
            self._cluster,
            txn_id,
            key_type=CoordinatorType.TRANSACTION,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=self.retry_backoff_ms,
        )

        def check(response: DescribeTransactionsResponse) -> None:
            for t in response.transaction_states:
                if t.error_code:
                    raise error_for_code(t.error_code, t.error_message)

        response: DescribeTransactionsResponse = await line.call(
            ApiKey.DESCRIBE_TRANSACTIONS,
            DescribeTransactionsRequest(transactional_ids=[txn_id]),
            check,
        )
        (t,) = response.transaction_states
        return TransactionDescription(
            t.transactional_id,
            t.transaction_state,
            t.producer_id,
            t.producer_epoch,
            t.transaction_timeout_ms,
            t.transaction_start_time_ms,
            tuple(TopicPartition(d.topic, p) for d in t.topics for p in d.partitions),
        )

    async def describe_producers(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, list[ProducerState]]:
        """Kafka's AdminClient.describeProducers: the producers each partition's leader
        knows, with the first offset of a transaction each has open there."""
        todo = {TopicPartition(*tp): 0 for tp in partitions}
        return await self._of_leaders(todo, self._producers_of, "DescribeProducers")

    async def _producers_of(
        self, node: int, tps: list[TopicPartition]
    ) -> dict[TopicPartition, list[ProducerState] | ApiError]:
        by_topic: dict[str, list[int]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        response: DescribeProducersResponse = await self._cluster.send(
            node,
            ApiKey.DESCRIBE_PRODUCERS,
            DescribeProducersRequest(
                topics=[
                    DescribeProducersTopic(name=t, partition_indexes=ps)
                    for t, ps in by_topic.items()
                ]
            ),
        )
        out: dict[TopicPartition, list[ProducerState] | ApiError] = {}
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition_index)
                if p.error_code:
                    error = error_for_code(p.error_code, p.error_message)
                    if not error.retriable:
                        raise error
                    out[tp] = error
                    continue
                out[tp] = [
                    ProducerState(
                        a.producer_id,
                        a.producer_epoch,
                        a.last_sequence,
                        a.last_timestamp,
                        a.coordinator_epoch,
                        a.current_txn_start_offset,
                    )
                    for a in p.active_producers
                ]
        return out

    async def abort_transaction(
        self,
        partition: TopicPartition,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
    ) -> None:
        """Kafka's AdminClient.abortTransaction (KIP-664): write an ABORT marker for
        ``producer_id``'s transaction open in ``partition``, as its coordinator would (for
        a transaction left hanging, which its coordinator no longer knows). Needs
        ClusterAction on the cluster; the marker is refused if the producer or the
        coordinator has moved on since (INVALID_PRODUCER_EPOCH,
        TRANSACTION_COORDINATOR_FENCED)."""
        marker = WritableTxnMarker(
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            transaction_result=False,
            coordinator_epoch=coordinator_epoch,
        )

        async def ask(node: int, tps: list[TopicPartition]) -> dict[TopicPartition, Any]:
            (tp,) = tps
            marker.topics = [
                WritableTxnMarkerTopic(name=tp.topic, partition_indexes=[tp.partition])
            ]
            response: WriteTxnMarkersResponse = await self._cluster.send(
                node, ApiKey.WRITE_TXN_MARKERS, WriteTxnMarkersRequest(markers=[marker])
            )
            (result,) = response.markers[0].topics[0].partitions
            if not result.error_code:
                return {tp: None}
            error = error_for_code(result.error_code, result.error_message)
            if not error.retriable:
                raise error
            return {tp: error}

        await self._of_leaders({TopicPartition(*partition): 0}, ask, "WriteTxnMarkers")

    async def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        """State, assignment strategy, generation and members of each group, from its
        coordinator. A group nobody knows is Dead with no members (Kafka's answer), or
        raises :class:`~protocol.errors.GroupIdNotFoundError` if the broker says so."""
        return list(await asyncio.gather(*(self._describe_group(g) for g in group_ids)))

    async def _describe_group(self, group_id: str) -> GroupDescription:
        def check(response: DescribeGroupsResponse) -> None:
            for group in response.groups:
                if group.error_code:
                    raise group_error(group.error_code, group.group_id, group.error_message)

        line = self._coordinator(group_id)
        response: DescribeGroupsResponse = await line.call(
            ApiKey.DESCRIBE_GROUPS, DescribeGroupsRequest(groups=[group_id]), check
        )
        node = await line.coordinator()  # the one that answered: known, no request
        broker = self._cluster.metadata.brokers.get(node)
        coordinator = (
            None
            if broker is None
            else BrokerDescription(node, broker.host, broker.port, broker.rack)
        )
        for group in response.groups:
            if group.group_id == group_id:
                return group_description(group)._replace(coordinator=coordinator)
        raise GroupIdNotFoundError(f"the coordinator did not describe group {group_id!r}")

    async def list_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets (the next offset to read) of ``partitions``, or of
        every partition it has committed (None); partitions without one are left out."""
        topics = None
        if partitions is not None:
            topics = [
                OffsetFetchRequestTopic(name=t, partition_indexes=ps)
                for t, ps in _by_topic(partitions).items()
            ]
        response: OffsetFetchResponse = await self._coordinator(group_id).call(
            ApiKey.OFFSET_FETCH,
            OffsetFetchRequest(group_id=group_id, topics=topics),
            _raise_partition_errors,
        )
        return {
            TopicPartition(t.name, p.partition_index): p.committed_offset
            for t in response.topics
            for p in t.partitions
            if p.committed_offset >= 0
        }

    async def alter_group_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, int]
    ) -> None:
        """Commit ``offsets`` (the next offset to read, per partition) for the group from
        outside it, as ``kafka-consumer-groups --reset-offsets`` does. The coordinator
        allows that only while the group has no members; otherwise this raises
        :class:`~protocol.errors.UnknownMemberIdError` saying to stop its consumers."""
        for tp, offset in offsets.items():
            if offset < 0:
                raise ValueError(f"offset {offset} for {tp.topic}-{tp.partition} is negative")
        try:
            await self._coordinator(group_id).commit(
                {TopicPartition(*tp): o for tp, o in offsets.items()}
            )
        except (UnknownMemberIdError, IllegalGenerationError, RebalanceInProgressError):
            # a commit from outside membership is refused only because members are live
            raise UnknownMemberIdError(
                f"group {group_id!r} has live members; its offsets can only be changed while "
                f"it is empty: stop its consumers first"
            ) from None

    async def delete_groups(self, group_ids: Iterable[str]) -> dict[str, ApiError | None]:
        """Delete each group and its committed offsets. Per group: None when deleted, else
        the typed error why not (NON_EMPTY_GROUP: it has members; GROUP_ID_NOT_FOUND), with
        a message that says what to do. Trouble reaching a coordinator is raised."""
        ids = list(dict.fromkeys(group_ids))
        outcomes = await asyncio.gather(*(self._delete_group(g) for g in ids))
        return dict(zip(ids, outcomes, strict=True))

    async def _delete_group(self, group_id: str) -> ApiError | None:
        refused: list[ApiError] = []

        def check(response: DeleteGroupsResponse) -> None:
            for result in response.results:
                if result.group_id == group_id and result.error_code:
                    error = group_error(result.error_code, group_id, result.error_message)
                    if error.retriable:
                        raise error  # the coordinator moved or is loading: ask again
                    refused.append(error)

        await self._coordinator(group_id).call(
            ApiKey.DELETE_GROUPS, DeleteGroupsRequest(groups_names=[group_id]), check
        )
        return refused[-1] if refused else None

    async def delete_consumer_group_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, ApiError | None]:
        """Delete the group's committed offsets of ``partitions`` (Kafka's
        ``deleteConsumerGroupOffsets``, ``kafka-consumer-groups --delete-offsets``): the
        group then starts them by its auto.offset.reset. Per partition, None if it has
        no offset now, else why not: GROUP_SUBSCRIBED_TO_TOPIC while a member subscribes
        to its topic. A group that does not exist (GROUP_ID_NOT_FOUND), or that has
        members and is not a consumer group (NON_EMPTY_GROUP), is raised."""
        wanted = list(dict.fromkeys(partitions))
        request = OffsetDeleteRequest(
            group_id=group_id,
            topics=[
                OffsetDeleteRequestTopic(
                    name=t, partitions=[OffsetDeleteRequestPartition(partition_index=p) for p in ps]
                )
                for t, ps in _by_topic(wanted).items()
            ],
        )
        response: OffsetDeleteResponse = await self._coordinator(group_id).call(
            ApiKey.OFFSET_DELETE, request
        )
        return {
            TopicPartition(t.name, p.partition_index): (
                None if not p.error_code else _offset_delete_error(p.error_code, group_id, t.name)
            )
            for t in response.topics
            for p in t.partitions
        }

    # --- share groups (KIP-932) ----------------------------------------------------------

    async def describe_share_groups(self, group_ids: Iterable[str]) -> list[ShareGroupDescription]:
        """State, epochs and members (with their assignments) of each share group, from
        its coordinator; Dead for an id no share group has."""
        return list(await asyncio.gather(*(self._describe_share_group(g) for g in group_ids)))

    async def _describe_share_group(self, group_id: str) -> ShareGroupDescription:
        def check(response: ShareGroupDescribeResponse) -> None:
            for group in response.groups:
                if group.error_code and group.error_code != GroupIdNotFoundError.code:
                    raise group_error(group.error_code, group.group_id, group.error_message)

        line = self._coordinator(group_id)
        response: ShareGroupDescribeResponse = await line.call(
            ApiKey.SHARE_GROUP_DESCRIBE, ShareGroupDescribeRequest(group_ids=[group_id]), check
        )
        node = await line.coordinator()
        broker = self._cluster.metadata.brokers.get(node)
        coordinator = (
            None
            if broker is None
            else BrokerDescription(node, broker.host, broker.port, broker.rack)
        )
        (group,) = [g for g in response.groups if g.group_id == group_id]
        return ShareGroupDescription(
            group_id,
            "Dead" if group.error_code else group.group_state,
            group.group_epoch,
            group.assignment_epoch,
            group.assignor_name,
            [
                ShareMemberDescription(
                    m.member_id,
                    m.client_id,
                    m.client_host,
                    m.rack_id,
                    m.member_epoch,
                    [
                        TopicPartition(t.topic_name, p)
                        for t in m.assignment.topic_partitions
                        for p in t.partitions
                    ],
                )
                for m in group.members
            ],
            coordinator,
        )

    async def list_share_group_offsets(
        self, group_id: str, topics: Iterable[str] | None = None
    ) -> dict[TopicPartition, SharePartitionOffset]:
        """Where share group ``group_id`` is in each partition it has read (of ``topics``,
        or every one): its start offset and its lag, the records from there to the log's
        end not done yet (Kafka's listShareGroupOffsets, with 4.2's lag)."""

        def check(response: DescribeShareGroupOffsetsResponse) -> None:
            if response.error_code:
                raise group_error(response.error_code, group_id, response.error_message)

        request = DescribeShareGroupOffsetsRequest(
            group_id=group_id, topics=None if topics is None else list(topics)
        )
        response: DescribeShareGroupOffsetsResponse = await self._coordinator(group_id).call(
            ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS, request, check
        )
        starts = {
            TopicPartition(t.topic, p.partition_index): p
            for t in response.topics
            for p in t.partitions
        }
        ends = await self.list_offsets({tp: OffsetSpec.latest() for tp in starts}) if starts else {}
        out: dict[TopicPartition, SharePartitionOffset] = {}
        for tp, p in sorted(starts.items()):
            end = ends.get(tp)
            lag = None
            if p.start_offset >= 0 and end is not None and end.offset >= 0:
                lag = max(end.offset - p.start_offset - p.delivery_complete_count, 0)
            out[tp] = SharePartitionOffset(p.start_offset, lag)
        return out

    def _coordinator(self, group_id: str) -> GroupOffsets:
        self._check_running()
        return GroupOffsets(
            self._cluster,
            group_id,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=self.retry_backoff_ms,
        )

    # --- partitions' offsets -------------------------------------------------------------

    async def list_offsets(
        self, specs: Mapping[TopicPartition, OffsetSpec]
    ) -> dict[TopicPartition, ListOffsetsResult]:
        """Kafka's AdminClient.listOffsets: per partition its earliest offset (the log
        start), its latest (the high watermark: the end of what consumers can read), or
        the first offset whose record's timestamp is at least the one given (-1 if none
        is). Asked of each partition's leader, retried while leaders move."""
        todo = {TopicPartition(*tp): spec.timestamp for tp, spec in specs.items()}
        return await self._of_leaders(
            todo, lambda node, tps: self._list_offsets_of(node, tps, todo), "ListOffsets"
        )

    async def delete_records(
        self, before: Mapping[TopicPartition, int], timeout_ms: int = 30_000
    ) -> dict[TopicPartition, int]:
        """Kafka's AdminClient.deleteRecords: each partition's records below the offset
        given (-1: all that consumers can read, up to the high watermark) are deleted.
        Consumers no longer read them, ``list_offsets`` earliest says the new start, and
        their segments go at the next retention pass. Returns each partition's low
        watermark: the lowest log start offset among its replicas in sync or on a live
        broker, reached within ``timeout_ms``. Not for compacted topics
        (``PolicyViolationError``).

        A partition refused for good (compacted, an offset past its high watermark) does
        not stop the others: every partition is answered, then the first refusal is
        raised, its message naming every refusal and what was deleted."""
        todo = {TopicPartition(*tp): offset for tp, offset in before.items()}
        answers: dict[TopicPartition, int | _Refused] = await self._of_leaders(
            todo,
            lambda node, tps: self._delete_records_of(node, tps, todo, timeout_ms),
            "DeleteRecords",
        )
        refused = {tp: a.error for tp, a in sorted(answers.items()) if isinstance(a, _Refused)}
        done = {tp: a for tp, a in answers.items() if not isinstance(a, _Refused)}
        if not refused:
            return done
        first = next(iter(refused.values()))
        message = "; ".join(f"{partition_names([tp])}: {e.message}" for tp, e in refused.items())
        if done:
            deleted = ", ".join(
                f"{partition_names([tp])} (low watermark {w})" for tp, w in sorted(done.items())
            )
            message += f"; the others' records were deleted: {deleted}"
        raise error_for_code(first.code, message)

    async def _of_leaders(
        self,
        todo: dict[TopicPartition, int],
        ask: Callable[[int, list[TopicPartition]], Awaitable[dict[TopicPartition, R | ApiError]]],
        what: str,
    ) -> dict[TopicPartition, R]:
        """``ask`` each partition's leader about its partitions, all leaders at once,
        again after a metadata refresh for those whose leader moved, until every
        partition is answered or ``request_timeout_ms`` passes."""
        topics = sorted({tp.topic for tp in todo})
        deadline = time.monotonic() + self.request_timeout_ms / 1000
        out: dict[TopicPartition, R] = {}
        while todo:
            metadata = await self._metadata(topics)
            _check_partitions_exist(metadata, todo)
            last = await self._leaders_round(metadata, todo, out, ask)
            if todo and time.monotonic() >= deadline:
                raise last or RequestTimedOutError(
                    f"no leader answered {what} for {partition_names(todo)} within "
                    f"{self.request_timeout_ms} ms"
                )
            if todo:
                await asyncio.sleep(self.retry_backoff_ms / 1000)
        return out

    async def _leaders_round(
        self,
        metadata: ClusterMetadata,
        todo: dict[TopicPartition, int],
        out: dict[TopicPartition, R],
        ask: Callable[[int, list[TopicPartition]], Awaitable[dict[TopicPartition, R | ApiError]]],
    ) -> ApiError | None:
        """Ask every leader for its partitions at once; answered ones move from ``todo``
        to ``out``. Returns the last retriable error; raises any other."""
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp in todo:
            leader = metadata.leader_for(tp)
            if leader is not None:
                by_leader.setdefault(leader, []).append(tp)
        answers = await asyncio.gather(
            *(ask(node, tps) for node, tps in by_leader.items()), return_exceptions=True
        )
        last: ApiError | None = None
        for answer in answers:
            if isinstance(answer, BaseException):
                if not (isinstance(answer, ApiError) and answer.retriable):
                    raise answer
                last = answer
                continue
            for tp, result in answer.items():
                if isinstance(result, ApiError):
                    last = result  # retriable: asked again
                else:
                    out[tp] = result
                    del todo[tp]
        return last

    async def _delete_records_of(
        self,
        node: int,
        tps: list[TopicPartition],
        offsets: Mapping[TopicPartition, int],
        timeout_ms: int,
    ) -> dict[TopicPartition, int | _Refused | ApiError]:
        by_topic: dict[str, list[DeleteRecordsPartition]] = {}
        for tp in tps:
            by_topic.setdefault(tp.topic, []).append(
                DeleteRecordsPartition(partition_index=tp.partition, offset=offsets[tp])
            )
        request = DeleteRecordsRequest(
            topics=[DeleteRecordsTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
            timeout_ms=timeout_ms,
        )
        response: DeleteRecordsResponse = await self._cluster.send(
            node,
            ApiKey.DELETE_RECORDS,
            request,
            timeout_ms=timeout_ms + self.request_timeout_ms,  # the broker holds it that long
        )
        out: dict[TopicPartition, int | _Refused | ApiError] = {}
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition_index)
                if not p.error_code:
                    out[tp] = p.low_watermark
                    continue
                error = error_for_code(
                    p.error_code,
                    p.error_message or f"DeleteRecords of {t.name}-{p.partition_index}",
                )
                if not (error.retriable or error.invalid_metadata):
                    out[tp] = _Refused(error)  # answered: the others go on
                    continue
                out[tp] = error  # a leader that moved, or replicas still catching up
        return out

    async def _list_offsets_of(
        self, node: int, tps: list[TopicPartition], timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, ListOffsetsResult | ApiError]:
        request = list_offsets_request(tps, timestamps)
        response: ListOffsetsResponse = await self._cluster.send(node, ApiKey.LIST_OFFSETS, request)
        out: dict[TopicPartition, ListOffsetsResult | ApiError] = {}
        for t in response.topics:
            for p in t.partitions:
                tp = TopicPartition(t.name, p.partition_index)
                if not p.error_code:
                    out[tp] = ListOffsetsResult(p.offset, p.timestamp, p.leader_epoch)
                    continue
                error = error_for_code(p.error_code, f"ListOffsets of {t.name}-{p.partition_index}")
                if not (error.retriable or error.invalid_metadata):
                    raise error
                out[tp] = error  # a leader that moved: asked again after a refresh
        return out

    # --- inside --------------------------------------------------------------------------

    async def elect_leaders(
        self,
        partitions: list[TopicPartition] | None = None,
        timeout_ms: int = 60_000,
        *,
        election_type: str = "preferred",
    ) -> dict[TopicPartition, ApiError | None]:
        """Leader election on demand (Kafka's ``kafka-leader-election``). ``"preferred"``:
        each partition's first replica leads again where it is alive and in sync.
        ``"unclean"`` (KIP-460): each partition with no live leader gets one from its live
        replicas, in sync or not, whatever its topic's config says; records the last leader
        had and that replica lacks are lost (ElectionNotNeededError: it has a leader;
        EligibleLeadersNotAvailableError: no replica is alive). None: every partition (for
        unclean, every one without a leader). Per partition, None if it is done, else why
        not."""
        try:
            kind = ElectionType[election_type.upper()]
        except KeyError:
            raise ValueError(
                f"election_type={election_type!r}: use 'preferred' or 'unclean'"
            ) from None
        by_topic = _by_topic(partitions or [])
        request = ElectLeadersRequest(
            election_type=kind,
            topic_partitions=None
            if partitions is None
            else [
                ElectLeadersTopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()
            ],
            timeout_ms=timeout_ms,
        )
        response: ElectLeadersResponse = await self._send_to_controller(
            ApiKey.ELECT_LEADERS, request
        )
        # a preferred replica leading already is done too (Kafka's ELECTION_NOT_NEEDED)
        done = (0, ElectionNotNeededError.code) if kind == ElectionType.PREFERRED else (0,)
        return {
            TopicPartition(t.topic, r.partition_id): (
                None if r.error_code in done else error_for_code(r.error_code, r.error_message)
            )
            for t in response.replica_election_results
            for r in t.partition_result
        }

    async def alter_partition_reassignments(
        self,
        reassignments: Mapping[TopicPartition, Sequence[int] | None],
        timeout_ms: int = 60_000,
    ) -> dict[TopicPartition, ApiError | None]:
        """Move partitions to other brokers (Kafka's ``alterPartitionReassignments``,
        ``kafka-reassign-partitions --execute``): each partition's new replicas, preferred
        leader first; None cancels its move, back to the replicas it started from.

        Returns once the moves have begun: the new replicas copy the log while the old
        ones keep serving, and each move finishes by itself when every new replica is in
        sync (the old ones are then deleted). Follow them with
        :meth:`list_partition_reassignments`. Per partition, None if its move began, else
        why not (INVALID_REPLICA_ASSIGNMENT, UNKNOWN_TOPIC_OR_PARTITION,
        NO_REASSIGNMENT_IN_PROGRESS)."""
        by_topic: dict[str, list[ReassignablePartition]] = {}
        for tp, replicas in reassignments.items():
            by_topic.setdefault(tp.topic, []).append(
                ReassignablePartition(
                    partition_index=tp.partition,
                    replicas=None if replicas is None else [int(r) for r in replicas],
                )
            )
        request = AlterPartitionReassignmentsRequest(
            timeout_ms=timeout_ms,
            topics=[ReassignableTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
        )
        response: AlterPartitionReassignmentsResponse = await self._send_to_controller(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS, request
        )
        if response.error_code:
            raise error_for_code(response.error_code, response.error_message)
        return {
            TopicPartition(t.name, p.partition_index): (
                None
                if not p.error_code
                else error_for_code(
                    p.error_code, p.error_message or f"{t.name}-{p.partition_index}"
                )
            )
            for t in response.responses
            for p in t.partitions
        }

    async def list_partition_reassignments(
        self, partitions: Iterable[TopicPartition] | None = None, timeout_ms: int = 60_000
    ) -> dict[TopicPartition, PartitionReassignment]:
        """The moves under way (Kafka's ``listPartitionReassignments``), of ``partitions``
        (None: all); a partition not being moved is not in the answer."""
        topics = None
        if partitions is not None:
            topics = [
                ListPartitionReassignmentsTopics(name=t, partition_indexes=ps)
                for t, ps in _by_topic(partitions).items()
            ]
        request = ListPartitionReassignmentsRequest(timeout_ms=timeout_ms, topics=topics)
        response: ListPartitionReassignmentsResponse = await self._send_to_controller(
            ApiKey.LIST_PARTITION_REASSIGNMENTS, request
        )
        if response.error_code:
            raise error_for_code(response.error_code, response.error_message)
        return {
            TopicPartition(t.name, p.partition_index): PartitionReassignment(
                list(p.replicas), list(p.adding_replicas), list(p.removing_replicas)
            )
            for t in response.topics
            for p in t.partitions
        }

    async def alter_replica_log_dirs(
        self,
        moves: Mapping[TopicPartitionReplica, str] | Mapping[tuple[str, int, int], str],
    ) -> dict[TopicPartitionReplica, ApiError | None]:
        """Move each replica's log to the data directory named, on its broker (Kafka's
        ``alterReplicaLogDirs``; the ``log_dirs`` of kafka-reassign-partitions' plans).
        The log is copied there while it serves, and swapped in once the copy has caught
        up; :meth:`describe_log_dirs` shows the copy (``is_future``) until then.

        Returns once each broker has begun its moves: per replica None (begun, or there
        already; asking for the directory it is in calls a move under way off), or the
        error: ``LogDirNotFoundError`` (not one of that broker's ``log.dirs``),
        ``ReplicaNotAvailableError`` (not on that broker yet: it will be made in that
        directory when it is), ``KafkaStorageError`` (a data directory of that broker is
        offline), or the broker's own (not reachable, not authorized)."""
        wanted: dict[int, dict[str, dict[str, list[int]]]] = {}
        for replica, path in moves.items():
            topic, partition, broker = replica
            wanted.setdefault(broker, {}).setdefault(path, {}).setdefault(topic, []).append(
                partition
            )

        async def ask(broker: int) -> dict[TopicPartitionReplica, ApiError | None]:
            request = AlterReplicaLogDirsRequest(
                dirs=[
                    AlterReplicaLogDir(
                        path=path,
                        topics=[
                            AlterReplicaLogDirTopic(name=t, partitions=ps)
                            for t, ps in topics.items()
                        ],
                    )
                    for path, topics in wanted[broker].items()
                ]
            )
            asked = [
                TopicPartitionReplica(t, p, broker)
                for topics in wanted[broker].values()
                for t, ps in topics.items()
                for p in ps
            ]
            try:
                answer: AlterReplicaLogDirsResponse = await self._cluster.send(
                    broker, ApiKey.ALTER_REPLICA_LOG_DIRS, request
                )
            except ApiError as exc:
                return dict.fromkeys(asked, exc)
            return {
                TopicPartitionReplica(t.topic_name, p.partition_index, broker): (
                    None
                    if not p.error_code
                    else error_for_code(
                        p.error_code,
                        f"{t.topic_name}-{p.partition_index} on broker {broker}",
                    )
                )
                for t in answer.results
                for p in t.partitions
            }

        out: dict[TopicPartitionReplica, ApiError | None] = {}
        for answered in await asyncio.gather(*(ask(b) for b in sorted(wanted))):
            out.update(answered)
        return out

    async def describe_log_dirs(
        self,
        brokers: Iterable[int] | None = None,
        partitions: Iterable[TopicPartition] | None = None,
    ) -> dict[int, dict[str, LogDirDescription]]:
        """Each broker's data directories and the partitions in them, with their sizes
        (Kafka's ``describeLogDirs``, ``kafka-log-dirs --describe``): of ``brokers``
        (None: every live one), and of ``partitions`` only (None: all)."""
        metadata = await self._metadata([])
        ids = sorted(metadata.brokers) if brokers is None else sorted(set(brokers))
        missing = [b for b in ids if b not in metadata.brokers]
        if missing:
            raise BrokerNotAvailableError(
                f"broker {missing[0]} is not live; the live ones are "
                f"{', '.join(map(str, sorted(metadata.brokers)))}"
            )
        request = DescribeLogDirsRequest(
            topics=None
            if partitions is None
            else [
                DescribableLogDirTopic(topic=t, partitions=ps)
                for t, ps in _by_topic(partitions).items()
            ]
        )
        answers: list[DescribeLogDirsResponse] = await asyncio.gather(
            *(self._cluster.send(b, ApiKey.DESCRIBE_LOG_DIRS, request) for b in ids)
        )
        out: dict[int, dict[str, LogDirDescription]] = {}
        for broker_id, answer in zip(ids, answers, strict=True):
            out[broker_id] = {
                d.log_dir: LogDirDescription(
                    None if not d.error_code else error_for_code(d.error_code, d.log_dir),
                    {
                        TopicPartition(t.name, p.partition_index): ReplicaInfo(
                            p.partition_size, p.offset_lag, p.is_future_key
                        )
                        for t in d.topics
                        for p in t.partitions
                    },
                    d.total_bytes,
                    d.usable_bytes,
                )
                for d in answer.results
            }
        return out

    async def _send_to_controller(self, api_key: ApiKey, request: object) -> Any:
        for attempt in range(5):  # the controller may move between metadata and request
            metadata = await self._metadata([])
            try:
                return await self._cluster.send(metadata.controller_id, api_key, request)
            except (NotControllerError, LeaderNotAvailableError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    # --- ACLs -------------------------------------------------------------------------------

    async def create_acls(self, acls: Iterable[AclBinding]) -> None:
        """Add ACLs (Kafka's ``createAcls``; ``kafka-acls --add``); returns once every
        broker applies them (see :meth:`_in_force`). Raises the first refusal."""
        bindings = list(acls)
        for acl in bindings:
            try:
                acl.check()
            except AclError as exc:
                raise ConfigurationError(f"ACL {acl.describe()}: {exc}") from None
        if not bindings:
            return
        request = CreateAclsRequest(
            creations=[
                AclCreation(
                    resource_type=a.resource_type,
                    resource_name=a.resource_name,
                    resource_pattern_type=a.pattern_type,
                    principal=a.principal,
                    host=a.host,
                    operation=a.operation,
                    permission_type=a.permission,
                )
                for a in bindings
            ]
        )
        response: CreateAclsResponse = await self._send(ApiKey.CREATE_ACLS, request)
        for acl, result in zip(bindings, response.results, strict=True):
            if result.error_code:
                raise error_for_code(
                    result.error_code, result.error_message or f"ACL {acl.describe()}"
                )
        await self._in_force(set(bindings), present=True)

    async def describe_acls(self, acl_filter: AclBindingFilter | None = None) -> list[AclBinding]:
        """The ACLs the filter matches (Kafka's ``describeAcls``; default: every one)."""
        wanted = acl_filter or AclBindingFilter()
        response: DescribeAclsResponse = await self._send(
            ApiKey.DESCRIBE_ACLS, DescribeAclsRequest(**_filter_fields(wanted))
        )
        return sorted(_bindings_of(response))

    async def delete_acls(self, filters: Iterable[AclBindingFilter]) -> list[AclBinding]:
        """Delete the ACLs each filter matches (Kafka's ``deleteAcls``); returns them once
        no broker applies them any more (see :meth:`_in_force`)."""
        wanted = list(filters)
        if not wanted:
            return []
        response: DeleteAclsResponse = await self._send(
            ApiKey.DELETE_ACLS,
            DeleteAclsRequest(filters=[DeleteAclsFilter(**_filter_fields(f)) for f in wanted]),
            idempotent=False,
        )
        deleted: list[AclBinding] = []
        for result in response.filter_results:
            if result.error_code:
                raise error_for_code(result.error_code, result.error_message or "DeleteAcls")
            for m in result.matching_acls:
                if m.error_code:
                    raise error_for_code(m.error_code, m.error_message or "DeleteAcls")
                deleted.append(
                    AclBinding.of(
                        m.resource_type,
                        m.resource_name,
                        m.pattern_type,
                        m.principal,
                        m.host,
                        m.operation,
                        m.permission_type,
                    )
                )
        await self._in_force(set(deleted), present=False)
        return sorted(set(deleted))

    async def _in_force(self, bindings: set[AclBinding], *, present: bool) -> None:
        """Until every broker's authorizer holds ``bindings`` (or, ``present`` false, none
        of them): :meth:`_on_every_broker` with one DescribeAcls asking for them all."""
        if not bindings:
            return

        def applied(answer: DescribeAclsResponse) -> bool:
            held = set(_bindings_of(answer))
            return bindings <= held if present else not bindings & held

        probe = DescribeAclsRequest(**_filter_fields(_narrowest(bindings)))
        await self._on_every_broker(ApiKey.DESCRIBE_ACLS, probe, applied, "ACLs changed")

    async def _on_every_broker(
        self, api_key: ApiKey, probe: object, applied: Callable[[Any], bool], what: str
    ) -> None:
        """Wait, for up to ``request_timeout_ms``, until ``applied`` holds of every
        broker's answer to ``probe``: each broker asked on its own, again after 10 ms,
        20, 40 ... (at most 200) while it lags, so a slow one holds up no other.

        For what each broker keeps a copy of (ACLs, delegation tokens): the broker that
        took a change applies it before it answers; the others read it from ZooKeeper's
        change notification a moment later. Kafka's brokers do the same, and its admin
        returns at once: a user allowed a moment ago can be refused by the next broker,
        and a job given a new token can fail to log in there.

        The change is made when this is called, so nothing here raises (but a caller's
        cancellation): a broker whose connection fails (down: it reads everything as it
        starts) or that refuses to say (this client may not describe it) is not waited
        for; one that has not applied the change, or not answered, by the timeout is
        named in a warning; and any other trouble is logged."""
        try:
            brokers = sorted((await self._metadata([])).brokers)
        except Exception as exc:  # (the change stands: said, not raised)
            _log.warning("%s; whether every broker has applied it is unknown: %s", what, exc)
            return
        refused: dict[int, ApiError] = {}

        async def settled(node: int) -> None:
            delay = _POLL_FIRST_S
            while True:
                try:
                    if applied(await self._cluster.send(node, api_key, probe)):
                        return
                except NetworkError:
                    return  # down, or gone: it reads everything as it starts
                except RequestTimedOutError:
                    pass  # slow: asked again (and named, if the deadline comes first)
                except ApiError as exc:
                    refused[node] = exc
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _POLL_MAX_S)

        tasks = {node: asyncio.create_task(settled(node)) for node in brokers}
        if not tasks:
            return
        try:
            _, behind = await asyncio.wait(tasks.values(), timeout=self.request_timeout_ms / 1000)
        finally:
            for task in tasks.values():
                task.cancel()  # (a request cancelled leaves its connection as it was)
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        _say_who_lags(what, tasks, behind, refused, self.request_timeout_ms)

    # --- client quotas --------------------------------------------------------------------

    async def describe_client_quotas(
        self,
        *,
        user: str | _Any | None = ANY_ENTITY,
        client_id: str | _Any | None = ANY_ENTITY,
        ip: str | _Any | None = ANY_ENTITY,
        strict: bool = False,
    ) -> dict[Entity, dict[str, float]]:
        """The quotas set (Kafka's ``describeClientQuotas``), by entity: ``((type, name),
        ...)``, name None for the default. ``user`` / ``client_id`` / ``ip``: a name, None
        for the default entity, or left out for any (an ip is asked about alone: its
        entities have no other part); ``strict``: only entities with exactly the parts
        asked about."""
        components = []
        for kind, wanted in ((USER, user), (CLIENT, client_id), (IP, ip)):
            if wanted is ANY_ENTITY:
                continue  # no condition on this part (with strict: entities without it)
            components.append(
                QuotaFilterComponent(entity_type=kind, match_type=1)
                if wanted is None
                else QuotaFilterComponent(entity_type=kind, match_type=0, match=str(wanted))
            )
        response: DescribeClientQuotasResponse = await self._send(
            ApiKey.DESCRIBE_CLIENT_QUOTAS,
            DescribeClientQuotasRequest(components=components, strict=strict),
        )
        return {
            tuple((p.entity_type, p.entity_name) for p in e.entity): {
                v.key: v.value for v in e.values
            }
            for e in response.entries or []
        }

    async def alter_client_quotas(
        self, changes: Mapping[Entity, Mapping[str, float | None]], *, validate_only: bool = False
    ) -> None:
        """Set (a number) or remove (None) quotas (Kafka's ``alterClientQuotas``): e.g.
        ``{(("user", "alice"),): {"producer_byte_rate": 1048576}}``, or an address's new
        connections a second, ``{(("ip", "10.0.0.7"),): {"connection_creation_rate": 10}}``
        (``("ip", None)``: every address's default); every broker applies them at once.
        Raises the first entity's error."""
        request = AlterClientQuotasRequest(
            validate_only=validate_only,
            entries=[
                AlterClientQuotasEntry(
                    entity=[QuotaEntityPart(entity_type=t, entity_name=n) for t, n in entity],
                    ops=[
                        QuotaOp(key=k, value=0.0 if v is None else float(v), remove=v is None)
                        for k, v in ops.items()
                    ],
                )
                for entity, ops in changes.items()
            ],
        )
        response: AlterClientQuotasResponse = await self._send(ApiKey.ALTER_CLIENT_QUOTAS, request)
        for result in response.entries:
            if result.error_code:
                raise error_for_code(result.error_code, result.error_message or "quotas")
        if not validate_only:
            await self._quotas_everywhere(changes)

    async def _quotas_everywhere(
        self, changes: Mapping[Entity, Mapping[str, float | None]]
    ) -> None:
        """Until every broker's copy of the quotas, what it enforces, holds the ones
        changed, for up to ``request_timeout_ms`` (see :meth:`_on_every_broker` for what is
        not waited for). The broker that took the change read its copy again before it
        answered; the others read theirs on ZooKeeper's notification a moment later, as
        Kafka's do, whose admin returns at once: a client throttled a moment ago may not
        be yet on the next broker. A broker reads its copy again on DescribeClientQuotas
        too, so one answer from each usually settles it. Values are compared as a broker
        keeps them (an ip's connection rate a whole number)."""
        what = "client quotas changed"
        try:
            expected = {
                _quota_entity(entity): {k: _quota_value(k, v) for k, v in ops.items()}
                for entity, ops in changes.items()
            }
        except Exception as exc:  # (the change stands: said, not raised)
            _log.warning("%s; whether every broker has applied it is unknown: %s", what, exc)
            return

        def applied(answer: DescribeClientQuotasResponse) -> bool:
            held = {
                _quota_entity([(p.entity_type, p.entity_name) for p in e.entity]): {
                    v.key: v.value for v in e.values
                }
                for e in answer.entries or []
            }
            return all(
                held.get(entity, {}).get(key) == value
                for entity, values in expected.items()
                for key, value in values.items()
            )

        await self._on_every_broker(ApiKey.DESCRIBE_CLIENT_QUOTAS, _QUOTAS_PROBE, applied, what)

    # --- delegation tokens (KIP-48) --------------------------------------------------------

    async def create_delegation_token(
        self,
        *,
        renewers: Iterable[str] = (),
        max_lifetime_ms: int = -1,
        owner: str | None = None,
    ) -> DelegationToken:
        """A delegation token for the user this client logged in as (Kafka's
        ``createDelegationToken``): ``renewers`` may renew it too (``User:<name>``);
        ``max_lifetime_ms`` (-1: the broker's ``delegation.token.max.lifetime.ms``) caps
        its life; ``owner`` makes it another user's (KIP-373: needs CREATE_TOKENS on that
        user). Needs a connection logged in with SASL or a client certificate, not with a
        token. Hand the token's id and :attr:`DelegationToken.password` to the job."""
        owner_type = owner_name = None
        if owner is not None:
            owner_type, owner_name = _principal_parts(owner)
        request = CreateDelegationTokenRequest(
            owner_principal_type=owner_type,
            owner_principal_name=owner_name,
            renewers=[
                TokenPrincipal(principal_type=t, principal_name=n)
                for t, n in map(_principal_parts, renewers)
            ],
            max_lifetime_ms=max_lifetime_ms,
        )
        answer: CreateDelegationTokenResponse = await self._send(
            ApiKey.CREATE_DELEGATION_TOKEN, request, idempotent=False
        )
        _raise_for(answer, "creating a delegation token")
        token = DelegationToken(
            token_id=answer.token_id,
            hmac=answer.hmac,
            owner=f"{answer.principal_type}:{answer.principal_name}",
            requester=(
                f"{answer.token_requester_principal_type}:{answer.token_requester_principal_name}"
            ),
            renewers=[f"{t}:{n}" for t, n in map(_principal_parts, renewers)],
            issue_timestamp_ms=answer.issue_timestamp_ms,
            expiry_timestamp_ms=answer.expiry_timestamp_ms,
            max_timestamp_ms=answer.max_timestamp_ms,
        )
        owners = [
            TokenPrincipal(
                principal_type=answer.principal_type, principal_name=answer.principal_name
            )
        ]
        expiry = answer.expiry_timestamp_ms
        await self._token_everywhere(
            answer.hmac, lambda held: held is not None and held >= expiry, "token created", owners
        )
        return token

    async def renew_delegation_token(self, hmac: bytes, renew_period_ms: int = -1) -> int:
        """Push the token's expiry to ``renew_period_ms`` from now (-1: the broker's
        ``delegation.token.expiry.time.ms``), never past its max; the new expiry (wall
        clock ms). Its owner, requester and renewers may."""
        answer: RenewDelegationTokenResponse = await self._send(
            ApiKey.RENEW_DELEGATION_TOKEN,
            RenewDelegationTokenRequest(hmac=hmac, renew_period_ms=renew_period_ms),
            idempotent=False,
        )
        _raise_for(answer, "renewing the delegation token")
        expiry = answer.expiry_timestamp_ms
        # (a later renewal, by another renewer, moves it on: that is applied too)
        await self._token_everywhere(
            hmac, lambda held: held is not None and held >= expiry, "token renewed"
        )
        return expiry

    async def expire_delegation_token(self, hmac: bytes, expiry_time_period_ms: int = -1) -> int:
        """End the token ``expiry_time_period_ms`` from now (-1: at once, and it is
        deleted); the new expiry (wall clock ms). Its owner, requester and renewers may."""
        answer: ExpireDelegationTokenResponse = await self._send(
            ApiKey.EXPIRE_DELEGATION_TOKEN,
            ExpireDelegationTokenRequest(hmac=hmac, expiry_time_period_ms=expiry_time_period_ms),
            idempotent=False,  # (a retried expire-at-once would say NOT_FOUND)
        )
        _raise_for(answer, "expiring the delegation token")
        expiry = answer.expiry_timestamp_ms
        if expiry_time_period_ms < 0:  # deleted: gone from every broker
            await self._token_everywhere(hmac, lambda held: held is None, "token expired")
        else:  # (gone too, once a broker's sweep has deleted it)
            await self._token_everywhere(
                hmac, lambda held: held is None or held <= expiry, "token expired"
            )
        return expiry

    async def _token_everywhere(
        self,
        hmac: bytes,
        settled: Callable[[int | None], bool],
        what: str,
        owners: list[TokenPrincipal] | None = None,
    ) -> None:
        """Until ``settled`` holds of the token's expiry on every broker (None: it has it
        no more), so that a job given it can log in on any broker at once, and one ended
        cannot: :meth:`_on_every_broker` with DescribeDelegationToken (its owner,
        requester and renewers may see it; ``owners`` narrows what each broker lists)."""

        def applied(answer: DescribeDelegationTokenResponse) -> bool:
            held = [t.expiry_timestamp for t in answer.tokens if t.hmac == hmac]
            return settled(held[0] if held else None)

        probe = DescribeDelegationTokenRequest(owners=owners)
        await self._on_every_broker(ApiKey.DESCRIBE_DELEGATION_TOKEN, probe, applied, what)

    async def describe_delegation_tokens(
        self, owners: Iterable[str] | None = None
    ) -> list[DelegationToken]:
        """The tokens this user may see (its own, those it may renew, and those ACLs let
        it describe), of ``owners`` only if given (``User:<name>``)."""
        request = DescribeDelegationTokenRequest(
            owners=None
            if owners is None
            else [
                TokenPrincipal(principal_type=t, principal_name=n)
                for t, n in map(_principal_parts, owners)
            ]
        )
        answer: DescribeDelegationTokenResponse = await self._send(
            ApiKey.DESCRIBE_DELEGATION_TOKEN, request
        )
        _raise_for(answer, "describing delegation tokens")
        return [
            DelegationToken(
                token_id=t.token_id,
                hmac=t.hmac,
                owner=f"{t.principal_type}:{t.principal_name}",
                requester=f"{t.token_requester_principal_type}:{t.token_requester_principal_name}",
                renewers=[f"{r.principal_type}:{r.principal_name}" for r in t.renewers],
                issue_timestamp_ms=t.issue_timestamp,
                expiry_timestamp_ms=t.expiry_timestamp,
                max_timestamp_ms=t.max_timestamp,
            )
            for t in answer.tokens
        ]

    # --- SCRAM users ----------------------------------------------------------------------

    async def describe_user_scram_credentials(
        self, users: Iterable[str] | None = None
    ) -> dict[str, UserScramCredentialsDescription]:
        """Each user's SCRAM mechanisms and iterations (Kafka's
        ``describeUserScramCredentials``): of ``users`` (None: every user that has one).
        A named user without any is ResourceNotFoundError."""
        names = None if users is None else list(dict.fromkeys(users))
        request = DescribeUserScramCredentialsRequest(
            users=None if names is None else [UserName(name=n) for n in names]
        )
        response: DescribeUserScramCredentialsResponse = await self._send(
            ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS, request
        )
        out: dict[str, UserScramCredentialsDescription] = {}
        for result in response.results:
            if result.error_code:
                raise error_for_code(result.error_code, result.error_message or result.user)
            out[result.user] = UserScramCredentialsDescription(
                result.user,
                [
                    ScramCredentialInfo(
                        _SCRAM_NAMES.get(i.mechanism, str(i.mechanism)), i.iterations
                    )
                    for i in result.credential_infos
                ],
            )
        return out

    async def alter_user_scram_credentials(
        self, alterations: Iterable[UserScramCredentialUpsertion | UserScramCredentialDeletion]
    ) -> None:
        """Set or remove users' SCRAM passwords (Kafka's ``alterUserScramCredentials``);
        every broker uses a change at the next login. The password is salted and hashed
        here; only that travels. Raises the first user's error (each user is changed or
        not on its own)."""
        request = AlterUserScramCredentialsRequest()
        for item in alterations:
            code = SCRAM_MECHANISM_CODES.get(item.mechanism)
            if code is None:
                raise ConfigurationError(
                    f"mechanism {item.mechanism!r}: use one of {', '.join(SCRAM_MECHANISM_CODES)}"
                )
            if isinstance(item, UserScramCredentialDeletion):
                request.deletions.append(ScramCredentialDeletion(name=item.user, mechanism=code))
                continue
            if not SCRAM_MIN_ITERATIONS <= item.iterations <= SCRAM_MAX_ITERATIONS:
                raise ConfigurationError(
                    f"iterations={item.iterations}: SCRAM needs {SCRAM_MIN_ITERATIONS} to "
                    f"{SCRAM_MAX_ITERATIONS}"
                )
            if not item.password:
                raise ConfigurationError(f"user {item.user}: the password is empty")
            salt = secrets.token_bytes(32)
            request.upsertions.append(
                ScramCredentialUpsertion(
                    name=item.user,
                    mechanism=code,
                    iterations=item.iterations,
                    salt=salt,
                    salted_password=await asyncio.to_thread(  # PBKDF2: not on the loop
                        salted_password, item.mechanism, item.password, salt, item.iterations
                    ),
                )
            )
        if not request.deletions and not request.upsertions:
            return
        response: AlterUserScramCredentialsResponse = await self._send(
            ApiKey.ALTER_USER_SCRAM_CREDENTIALS, request
        )
        for result in response.results:
            if result.error_code:
                raise error_for_code(result.error_code, result.error_message or result.user)

    async def _metadata(self, topics: list[str] | None) -> ClusterMetadata:
        self._check_running()
        return await self._cluster.fetch_metadata(topics, allow_auto_topic_creation=False)

    async def _send(self, api_key: ApiKey, request: object, *, idempotent: bool = True) -> Any:
        self._check_running()
        return await self._cluster.send_any(api_key, request, idempotent=idempotent)

    def _check_running(self) -> None:
        if self._state != "running":
            what = "not started; call start()" if self._state == "new" else self._state
            raise ClientClosedError(f"the admin client is {what}")


def _principal_parts(who: str) -> tuple[str, str]:
    """``User:alice`` -> ("User", "alice"); a bare name is a user's."""
    kind, sep, name = who.partition(":")
    if not sep:
        return "User", who
    if not kind or not name:
        raise ConfigurationError(f"{who!r} is not a principal: give User:<name>")
    return kind, name


def _raise_for(answer: Any, what: str) -> None:
    if answer.error_code:
        raise error_for_code(answer.error_code, answer.error_message or what)


def _by_topic(partitions: Iterable[TopicPartition]) -> dict[str, list[int]]:
    """The partition numbers of each topic, in the order given."""
    out: dict[str, list[int]] = {}
    for tp in partitions:
        out.setdefault(tp.topic, []).append(tp.partition)
    return out


def _broker_node(kind: int, name: str) -> int | None:
    """The broker a config request about this resource must go to (a broker's own configs
    are changed and described by that broker, as Kafka's admin client routes them); None:
    any broker."""
    if kind != ConfigResourceType.BROKER or not name.strip():
        return None
    if not name.strip().isdigit():
        raise ValueError(
            f"broker config resource {name!r}: give a broker id, or '' for the default"
        )
    return int(name)


@dataclasses.dataclass(slots=True)
class _Picked:
    """The broker picked to take the config changes any broker may take, and what they
    change: the default settings touched (None: no default is changed), the topics."""

    node: int
    touched: frozenset[str] | None
    topics: tuple[str, ...]
    stood_in: bool = False
    """Another broker took the change (the one picked could not): the wait has no answer
    to agree with."""


_BROKER = ConfigResourceType.BROKER
_TOPIC_OWN = ConfigSource.DYNAMIC_TOPIC_CONFIG
_DEFAULTS_PROBE = DescribeConfigsRequest(
    resources=[DescribeConfigsResource(resource_type=_BROKER, resource_name="")]
)


def _defaults_of(answer: DescribeConfigsResponse) -> dict[str, str | None]:
    """A broker's every-broker defaults, from its DescribeConfigs of broker ``""``."""
    (result,) = answer.results
    if result.error_code:
        raise error_for_code(result.error_code, result.error_message)
    return {e.name: e.value for e in result.configs}


_QUOTAS_PROBE = DescribeClientQuotasRequest(components=[], strict=False)
"""Every entity's quotas: a broker reads them from ZooKeeper to answer."""


def _quota_entity(parts: Iterable[tuple[str, str | None]]) -> frozenset[tuple[str, str | None]]:
    """A quota entity as a broker names it back: an ip in its one spelling."""
    out = set()
    for kind, name in parts:
        spelled = name
        if kind == IP and name is not None:
            with contextlib.suppress(ValueError):  # (not an address: the broker refused it)
                spelled = str(ipaddress.ip_address(name.strip()))
        out.add((kind, spelled))
    return frozenset(out)


def _quota_value(key: str, value: float | None) -> float | None:
    """A quota's value as a broker keeps it (None: removed), from the float sent."""
    if value is None:
        return None
    sent = float(value)
    return float(round(sent)) if key in IP_QUOTA_KEYS else sent


def _described(
    answer: DescribeConfigsResponse, picked: _Picked
) -> dict[tuple[int, str], dict[str, str | None]]:
    """What :meth:`Admin._configs_everywhere` compares of a broker's answer, by resource:
    of the defaults, each setting touched (None: not set); of a topic, each setting's
    own value (None: the topic does not set it). A resource refused (a topic deleted) is
    left out; if every one is refused for another reason, the first refusal is raised
    (that broker is not waited for)."""
    out: dict[tuple[int, str], dict[str, str | None]] = {}
    refusal: ApiError | None = None
    for result in answer.results:
        if result.error_code:
            if result.error_code != UnknownTopicOrPartitionError.code and refusal is None:
                refusal = error_for_code(result.error_code, result.error_message)
        elif result.resource_type == _BROKER:
            values = {e.name: e.value for e in result.configs}
            out[_BROKER, ""] = {n: values.get(n) for n in picked.touched or ()}
        else:
            out[result.resource_type, result.resource_name] = {
                e.name: e.value if e.config_source == _TOPIC_OWN else None for e in result.configs
            }
    if refusal is not None and not out:
        raise refusal
    return out


def _by_node(resources: Iterable[Any]) -> dict[int | None, list[Any]]:
    """Config change resources grouped by the broker that must take them."""
    out: dict[int | None, list[Any]] = {}
    for r in resources:
        out.setdefault(_broker_node(r.resource_type, r.resource_name), []).append(r)
    return out


def _resource_type(value: str | int) -> int:
    if isinstance(value, str):
        try:
            return ConfigResourceType[value.upper()].value
        except KeyError:
            raise ValueError(
                f"unknown config resource type {value!r}; use 'topic', 'broker' or 'group'"
            ) from None
    return int(value)


def _op_type(value: str | int) -> int:
    if isinstance(value, str):
        try:
            return OpType[value.upper()].value
        except KeyError:
            names = ", ".join(o.name for o in OpType)
            raise ValueError(f"unknown config operation {value!r}; use one of {names}") from None
    return int(value)


def _raise_alter_errors(results: list[AlterConfigsResourceResponse]) -> None:
    for result in results:
        topic = result.resource_type == ConfigResourceType.TOPIC
        if topic and result.error_code == UnknownTopicOrPartitionError.code:
            raise unknown_topic_error(result.resource_name)
        if result.error_code:
            raise error_for_code(
                result.error_code,
                result.error_message or f"the configs of {result.resource_name!r} were not changed",
            )


def _source_name(source: int) -> str:
    try:
        return ConfigSource(source).name
    except ValueError:
        return ConfigSource.UNKNOWN.name


def _offset_delete_error(code: int, group_id: str, topic: str) -> ApiError:
    if code == GroupSubscribedToTopicError.code:
        return GroupSubscribedToTopicError(
            f"a member of group {group_id!r} subscribes to {topic!r}: its offsets stay while "
            "it does (stop the group's consumers, or unsubscribe them from it)"
        )
    return group_error(code, group_id, f"group {group_id!r}, topic {topic!r}")


def group_error(code: int, group_id: str, message: str | None = None) -> ApiError:
    """The typed error of one group's result, with a message that says what to do."""
    if code == NonEmptyGroupError.code:
        return NonEmptyGroupError(f"group {group_id!r} still has members; stop its consumers first")
    if code == GroupIdNotFoundError.code:
        return GroupIdNotFoundError(
            f"group {group_id!r} does not exist (`headwater groups list` shows the groups)"
        )
    return error_for_code(code, message or f"group {group_id!r}")


def group_description(group: DescribedGroup) -> GroupDescription:
    """DescribeGroups' answer for one group, with consumer assignments decoded."""
    members = [
        MemberDescription(
            m.member_id,
            m.group_instance_id,
            m.client_id,
            m.client_host,
            _assigned(m.member_assignment) if group.protocol_type == "consumer" else [],
        )
        for m in group.members
    ]
    return GroupDescription(
        group.group_id,
        group.group_state,
        group.protocol_type,
        group.protocol_data,
        group.generation_id,
        group.leader,
        members,
    )


def _assigned(data: bytes) -> list[TopicPartition]:
    try:
        return sorted(decode_assignment(data).partitions)
    except ProtocolError:  # one member's odd bytes must not fail the whole description
        return []


def _raise_partition_errors(response: OffsetFetchResponse) -> None:
    for topic in response.topics:
        for p in topic.partitions:
            if p.error_code:
                raise error_for_code(p.error_code, f"{topic.name}-{p.partition_index}")


def _check_partitions_exist(metadata: ClusterMetadata, tps: Iterable[TopicPartition]) -> None:
    """A topic or partition that does not exist raises at once (its error is retriable on
    the wire, since metadata may lag a creation, but waiting would not help here)."""
    for tp in tps:
        error = metadata.topic_errors.get(tp.topic)
        if isinstance(error, UnknownTopicOrPartitionError):
            raise unknown_topic_error(tp.topic)
        meta = metadata.topics.get(tp.topic)  # not partitions_for: a set made per call
        partitions = meta.partitions if meta is not None else None
        if partitions is not None and tp.partition not in partitions:
            raise UnknownTopicOrPartitionError(
                f"topic {tp.topic!r} has no partition {tp.partition} (it has {len(partitions)})"
            )


def _say_who_lags(
    what: str,
    tasks: dict[int, asyncio.Task[None]],
    behind: set[asyncio.Task[None]],
    refused: dict[int, ApiError],
    timeout_ms: int,
) -> None:
    """The log of :meth:`Admin._on_every_broker`'s wait: the brokers it did not wait for,
    and why; those still behind at the timeout."""
    for node, error in sorted(refused.items()):
        _log.info("%s; not waiting for broker %d to apply it: %s", what, node, error)
    for node, task in sorted(tasks.items()):
        if task not in behind and task.exception() is not None:
            _log.warning(
                "%s; whether broker %d has applied it is unknown: %r",
                what,
                node,
                task.exception(),
            )
    if behind:
        _log.warning(
            "%s, but broker(s) %s had not applied the change within request_timeout_ms "
            "(%d ms), or hold another value since; a broker behind applies it once "
            "ZooKeeper's notification reaches it",
            what,
            ", ".join(str(n) for n, t in sorted(tasks.items()) if t in behind),
            timeout_ms,
        )


def _bindings_of(answer: DescribeAclsResponse) -> list[AclBinding]:
    """The ACLs a DescribeAcls answer lists."""
    return [
        AclBinding.of(
            r.resource_type,
            r.resource_name,
            r.pattern_type,
            a.principal,
            a.host,
            a.operation,
            a.permission_type,
        )
        for r in answer.resources
        for a in r.acls
    ]


def _narrowest(bindings: set[AclBinding]) -> AclBindingFilter:
    """The narrowest filter matching every one of ``bindings``: each field they share,
    ANY for the others (one DescribeAcls per broker asks for them all)."""

    def shared(values: set[Any], anything: Any) -> Any:
        return next(iter(values)) if len(values) == 1 else anything

    return AclBindingFilter(
        resource_type=shared({b.resource_type for b in bindings}, ResourceType.ANY),
        resource_name=shared({b.resource_name for b in bindings}, None),
        pattern_type=shared({b.pattern_type for b in bindings}, PatternType.ANY),
        principal=shared({b.principal for b in bindings}, None),
        host=shared({b.host for b in bindings}, None),
        operation=shared({b.operation for b in bindings}, Operation.ANY),
        permission=shared({b.permission for b in bindings}, Permission.ANY),
    )


def _filter_fields(f: AclBindingFilter) -> dict[str, Any]:
    return {
        "resource_type_filter": f.resource_type,
        "resource_name_filter": f.resource_name,
        "pattern_type_filter": f.pattern_type,
        "principal_filter": f.principal,
        "host_filter": f.host,
        "operation": f.operation,
        "permission_type": f.permission,
    }

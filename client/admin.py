"""Cluster administration: topics, the cluster's brokers and controller, topic configs.

Shaped like aiokafka's AIOKafkaAdminClient, with answers as the NamedTuples of
:mod:`client.types`. Any broker accepts CreateTopics and DeleteTopics (the broker
forwards the work to the controller), so requests go to whichever broker answers. A
refused topic raises its typed error (TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS, ...)
with a message naming the topic; when several are refused, the first one is raised.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

from client.cluster import Cluster, ClusterMetadata, unknown_topic_error
from client.errors import ClientClosedError
from client.types import (
    BrokerDescription,
    ClusterDescription,
    ConfigEntry,
    NewTopic,
    PartitionDescription,
    TopicDescription,
    TopicPartition,
)
from protocol.apis import (
    ApiKey,
    ConfigResourceType,
    ConfigSource,
    CreatableTopic,
    CreatableTopicConfig,
    CreateTopicsRequest,
    CreateTopicsResponse,
    DeleteTopicsRequest,
    DeleteTopicsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResource,
    DescribeConfigsResponse,
    ElectionType,
    ElectLeadersRequest,
    ElectLeadersResponse,
    ElectLeadersTopicPartitions,
)
from protocol.errors import (
    ApiError,
    LeaderNotAvailableError,
    NotControllerError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    error_for_code,
)

__all__ = ["Admin"]


class Admin:
    """``async with Admin(bootstrap_servers=...) as admin: await admin.list_topics()``."""

    def __init__(
        self,
        *,
        bootstrap_servers: str | list[str],
        client_id: str = "headwater-admin",
        request_timeout_ms: int = 30_000,
    ) -> None:
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self._cluster = Cluster(
            bootstrap_servers,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            allow_auto_topic_creation=False,
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
        """Create the topics; returns once the brokers know their leaders (or raises)."""
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
        response: CreateTopicsResponse = await self._send(
            ApiKey.CREATE_TOPICS, request, idempotent=False
        )
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

    async def delete_topics(self, topics: list[str], timeout_ms: int = 30_000) -> None:
        request = DeleteTopicsRequest(topic_names=list(topics), timeout_ms=timeout_ms)
        response: DeleteTopicsResponse = await self._send(
            ApiKey.DELETE_TOPICS, request, idempotent=False
        )
        for result in response.responses:
            if result.error_code == UnknownTopicOrPartitionError.code:
                raise UnknownTopicOrPartitionError(f"topic {result.name!r} does not exist")
            if result.error_code:
                raise error_for_code(
                    result.error_code,
                    result.error_message or f"topic {result.name!r} was not deleted",
                )

    async def list_topics(self) -> list[str]:
        """Every topic's name, sorted, internal ones included."""
        metadata = await self._metadata(None)
        return sorted(metadata.topics)

    async def describe_topics(self, names: list[str] | None = None) -> list[TopicDescription]:
        """Leaders, replicas and ISR per partition; an unknown name raises (with what to do)."""
        metadata = await self._metadata(names)
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
            out.append(TopicDescription(name, topic.is_internal, partitions))
        return out

    async def describe_cluster(self) -> ClusterDescription:
        metadata = await self._metadata([])
        brokers = [
            BrokerDescription(b.node_id, b.host, b.port, b.rack)
            for b in sorted(metadata.brokers.values(), key=lambda b: b.node_id)
        ]
        return ClusterDescription(metadata.cluster_id, metadata.controller_id, brokers)

    async def describe_configs(self, topic: str) -> dict[str, ConfigEntry]:
        """The topic's settings: every one, with where its value comes from."""
        request = DescribeConfigsRequest(
            resources=[
                DescribeConfigsResource(resource_type=ConfigResourceType.TOPIC, resource_name=topic)
            ]
        )
        response: DescribeConfigsResponse = await self._send(ApiKey.DESCRIBE_CONFIGS, request)
        out: dict[str, ConfigEntry] = {}
        for result in response.results:
            if result.error_code == UnknownTopicOrPartitionError.code:
                raise unknown_topic_error(topic)
            if result.error_code:
                raise error_for_code(result.error_code, result.error_message)
            for entry in result.configs:
                out[entry.name] = ConfigEntry(
                    entry.name,
                    entry.value,
                    _source_name(entry.config_source),
                    entry.read_only,
                    entry.is_sensitive,
                )
        return out

    # --- inside --------------------------------------------------------------------------

    async def elect_leaders(
        self, partitions: list[TopicPartition] | None = None, timeout_ms: int = 60_000
    ) -> dict[TopicPartition, ApiError | None]:
        """Preferred leader election (Kafka's ``kafka-leader-election --election-type
        preferred``): each partition's first replica leads again where it is alive and in
        sync. None: every partition. Per partition, None if it now leads, else why not."""
        by_topic: dict[str, list[int]] = {}
        for tp in partitions or []:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        request = ElectLeadersRequest(
            election_type=ElectionType.PREFERRED,
            topic_partitions=None
            if partitions is None
            else [
                ElectLeadersTopicPartitions(topic=t, partitions=ps) for t, ps in by_topic.items()
            ],
            timeout_ms=timeout_ms,
        )
        for attempt in range(5):  # the controller may move between metadata and request
            metadata = await self._metadata([])
            try:
                response: ElectLeadersResponse = await self._cluster.send(
                    metadata.controller_id, ApiKey.ELECT_LEADERS, request
                )
                break
            except (NotControllerError, LeaderNotAvailableError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        return {
            TopicPartition(t.topic, r.partition_id): (
                None if not r.error_code else error_for_code(r.error_code, r.error_message)
            )
            for t in response.replica_election_results
            for r in t.partition_result
        }

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


def _source_name(source: int) -> str:
    try:
        return ConfigSource(source).name
    except ValueError:
        return ConfigSource.UNKNOWN.name

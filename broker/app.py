"""One broker: the parts wired together, started and stopped in order.

Start: ZooKeeper session -> cluster id -> log directories (recovery runs in a worker thread)
-> listener -> registration in ``/brokers/ids`` -> controller candidacy -> ``broker.ready``
(logged with the bound port; harnesses wait for it instead of sleeping).
Stop (SIGTERM/SIGINT): stop accepting and answer what is in flight, give up the
controllership, deregister, flush and close the logs with the clean-shutdown marker, close
the ZooKeeper session.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any

import structlog

from broker.admin import TopicAdmin
from broker.config import BrokerConfig
from broker.controller.controller import Controller
from broker.controller.election import ControllerElection
from broker.log.manager import LogManager
from broker.metadata import MetadataCache
from broker.registration import BrokerRegistrar, get_or_create_cluster_id
from broker.replica.manager import ReplicaManager
from broker.server import BrokerServer
from broker.zk import BrokerRegistration, ZkBridge, ZkError
from protocol.apis import (
    ApiKey,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    DescribeConfigsRequest,
    FetchRequest,
    LeaderAndIsrRequest,
    LeaderAndIsrResponse,
    ListOffsetsRequest,
    MetadataBroker,
    MetadataPartition,
    MetadataRequest,
    MetadataResponse,
    MetadataTopic,
    ProduceRequest,
    StopReplicaRequest,
    StopReplicaResponse,
    UpdateMetadataRequest,
    UpdateMetadataResponse,
)
from protocol.errors import (
    LeaderNotAvailableError,
    StaleControllerEpochError,
    UnknownTopicOrPartitionError,
)
from protocol.framing import RequestHeader

__all__ = ["Broker"]

_ZK_STOP_STEP_S = 5.0
_LISTENER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*://(?P<host>[^:/]*):(?P<port>\d+)$")
_FLUSH_CHECK_S = 1.0


def _host_port(listener: str) -> tuple[str, int]:
    match = _LISTENER.match(listener)
    assert match is not None, listener  # validated by broker.config
    return match["host"] or "0.0.0.0", int(match["port"])


class Broker:
    """A broker process's state. ``await start()``, then ``await stop()``."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.broker_id = config.broker_id
        self.cluster_id = ""
        self.port = -1
        self.metadata = MetadataCache()
        self._zk: ZkBridge | None = None
        self._logs: LogManager | None = None
        self._replicas: ReplicaManager | None = None
        self._admin: TopicAdmin | None = None
        self._server: BrokerServer | None = None
        self._registrar: BrokerRegistrar | None = None
        self._election: ControllerElection | None = None
        self._controller: Controller | None = None
        self._controller_epoch = -1  # the newest seen: older controllers are fenced
        self._housekeeping: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("headwater.broker").bind(broker_id=self.broker_id)

    @property
    def controller_id(self) -> int:
        return self._election.controller_id if self._election else -1

    async def start(self) -> None:
        cfg = self.config
        self._zk = ZkBridge(
            cfg["zookeeper.connect"], session_timeout_ms=cfg["zookeeper.session.timeout.ms"]
        )
        await self._zk.start(timeout_s=cfg["zookeeper.connection.timeout.ms"] / 1000)
        self.cluster_id = await get_or_create_cluster_id(self._zk)
        self._log = self._log.bind(cluster_id=self.cluster_id)
        self._logs = LogManager(
            cfg.log_dirs,
            broker_id=self.broker_id,
            cluster_id=self.cluster_id,
            default_config=cfg.log_config(),
        )
        await asyncio.to_thread(self._logs.startup)  # recovery may read whole segments
        self._admin = TopicAdmin(self._zk, cfg, self.metadata)
        self._replicas = ReplicaManager(
            self.broker_id, self._logs, self.metadata, self._admin.topic_config
        )
        host, port = _host_port(cfg["listeners"][0])
        self._server = BrokerServer(
            self._handlers(),
            max_frame_bytes=cfg["socket.request.max.bytes"],
            max_idle_ms=cfg["connections.max.idle.ms"],
        )
        self.port = await self._server.start(host, port)
        adv_host, adv_port = _host_port(cfg.advertised_listeners[0])
        if adv_port == 0:  # advertising a port-0 listener means: the port we bound
            adv_port = self.port
        if adv_host == "0.0.0.0":
            adv_host = "127.0.0.1"
        self._registrar = BrokerRegistrar(
            self._zk, BrokerRegistration(self.broker_id, adv_host, adv_port)
        )
        await self._registrar.register()
        self._controller = Controller(self._zk, self.broker_id)
        self._election = ControllerElection(
            self._zk, self.broker_id, self._controller.activate, self._on_resigned
        )
        await self._election.start()
        self._housekeeping = asyncio.get_running_loop().create_task(self._keep_house())
        self._log.info("broker.ready", host=adv_host, port=adv_port)

    async def stop(self) -> None:
        self._log.info("broker.stopping")
        if self._server is not None:
            await self._server.stop()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        # ZooKeeper may be gone: its steps are bounded, and the data is closed regardless
        if self._election is not None:
            await self._bounded("giving up the controllership", self._election.stop())
        if self._controller is not None:
            await self._controller.deactivate()
        if self._registrar is not None:
            await self._bounded("deregistering", self._registrar.deregister())
        if self._logs is not None:
            await asyncio.to_thread(self._logs.shutdown)
        if self._zk is not None:
            await self._bounded("closing the ZooKeeper session", self._zk.stop())
        self._log.info("broker.stopped")

    async def _bounded(self, doing: str, step: Awaitable[None]) -> None:
        """A stop step that needs ZooKeeper: skipped with a warning if it cannot finish
        (ZooKeeper down), since the session's expiry does the same job later."""
        connected = self._zk is not None and self._zk.connected
        try:
            await asyncio.wait_for(step, _ZK_STOP_STEP_S if connected else 0.5)
        except (TimeoutError, ZkError) as exc:
            self._log.warning("broker.stop_step_skipped", step=doing, error=repr(exc))

    def _handlers(self) -> dict[ApiKey, Any]:
        assert self._replicas is not None and self._admin is not None
        replicas, admin = self._replicas, self._admin

        async def produce(header: RequestHeader, request: ProduceRequest) -> Any:
            response = replicas.produce(request)
            return None if request.acks == 0 else response

        async def fetch(header: RequestHeader, request: FetchRequest) -> Any:
            return await replicas.fetch(request)

        async def list_offsets(header: RequestHeader, request: ListOffsetsRequest) -> Any:
            return replicas.list_offsets(request)

        async def create_topics(header: RequestHeader, request: CreateTopicsRequest) -> Any:
            return await admin.create_topics(request)

        async def delete_topics(header: RequestHeader, request: DeleteTopicsRequest) -> Any:
            return await admin.delete_topics(request)

        async def describe_configs(header: RequestHeader, request: DescribeConfigsRequest) -> Any:
            return await admin.describe_configs(request)

        return {
            ApiKey.PRODUCE: produce,
            ApiKey.FETCH: fetch,
            ApiKey.LIST_OFFSETS: list_offsets,
            ApiKey.METADATA: self._metadata,
            ApiKey.CREATE_TOPICS: create_topics,
            ApiKey.DELETE_TOPICS: delete_topics,
            ApiKey.DESCRIBE_CONFIGS: describe_configs,
            ApiKey.LEADER_AND_ISR: self._leader_and_isr,
            ApiKey.STOP_REPLICA: self._stop_replica,
            ApiKey.UPDATE_METADATA: self._update_metadata,
        }

    async def _on_resigned(self) -> None:
        if self._controller is not None:
            await self._controller.deactivate()
        self._log.info("controller.inactive")

    async def _keep_house(self) -> None:
        """Periodic work: flushes due by ``flush.ms``, retention every check interval."""
        assert self._replicas is not None and self._logs is not None
        loop = asyncio.get_running_loop()
        retention_s = self.config["log.retention.check.interval.ms"] / 1000
        next_retention = loop.time() + retention_s
        while True:
            await asyncio.sleep(_FLUSH_CHECK_S)
            self._replicas.flush_due_logs()
            if loop.time() >= next_retention:
                next_retention = loop.time() + retention_s
                for _, log in self._logs:
                    if not log.offline:
                        log.apply_retention()
                        log.delete_pending()

    # --- requests from the controller ---------------------------------------------------

    def _fence(self, controller_epoch: int, what: str) -> None:
        if controller_epoch < self._controller_epoch:
            raise StaleControllerEpochError(
                f"{what} from controller epoch {controller_epoch}; the current one is "
                f"{self._controller_epoch}"
            )
        self._controller_epoch = controller_epoch

    async def _leader_and_isr(self, header: RequestHeader, request: LeaderAndIsrRequest) -> Any:
        assert self._replicas is not None
        self._fence(request.controller_epoch, "LeaderAndIsr")
        errors = await self._replicas.become_leader_or_follower(request.partition_states)
        return LeaderAndIsrResponse(partition_errors=errors)

    async def _stop_replica(self, header: RequestHeader, request: StopReplicaRequest) -> Any:
        assert self._replicas is not None
        self._fence(request.controller_epoch, "StopReplica")
        errors = await self._replicas.stop_replicas(
            request.partitions, delete=request.delete_partitions
        )
        return StopReplicaResponse(partition_errors=errors)

    async def _update_metadata(self, header: RequestHeader, request: UpdateMetadataRequest) -> Any:
        self._fence(request.controller_epoch, "UpdateMetadata")
        self.metadata.update(request)
        return UpdateMetadataResponse()

    # --- Metadata -----------------------------------------------------------------------

    async def _metadata(self, header: RequestHeader, request: MetadataRequest) -> Any:
        assert self._admin is not None
        cache = self.metadata
        names = sorted(cache.topics) if request.topics is None else request.topics
        topics = []
        for name in names:
            partitions = cache.topics.get(name)
            if partitions is None:
                topics.append(await self._missing_topic(name, request.allow_auto_topic_creation))
                continue
            rows = []
            for index, state in sorted(partitions.items()):
                live = state.leader in cache.brokers
                rows.append(
                    MetadataPartition(
                        error_code=0 if live else LeaderNotAvailableError.code,
                        partition_index=index,
                        leader_id=state.leader if live else -1,
                        leader_epoch=state.leader_epoch,
                        replica_nodes=list(state.replicas),
                        isr_nodes=list(state.isr),
                        offline_replicas=list(state.offline_replicas),
                    )
                )
            internal = name.startswith("__")
            topics.append(MetadataTopic(name=name, is_internal=internal, partitions=rows))
        brokers = [
            MetadataBroker(node_id=b.id, host=b.host, port=b.port, rack=b.rack)
            for b in sorted(cache.brokers.values(), key=lambda b: b.id)
        ]
        return MetadataResponse(
            brokers=brokers,
            cluster_id=self.cluster_id,
            controller_id=self.controller_id,
            topics=topics,
        )

    async def _missing_topic(self, name: str, allow_auto_create: bool) -> MetadataTopic:
        assert self._admin is not None
        if (
            allow_auto_create
            and self.config["auto.create.topics.enable"]
            and name not in self.metadata.deleting
        ):
            await self._admin.auto_create(name)
            return MetadataTopic(
                name=name,
                error_code=LeaderNotAvailableError.code,
                error_message=f"topic {name!r} is being created; ask again shortly",
            )
        return MetadataTopic(
            name=name,
            error_code=UnknownTopicOrPartitionError.code,
            error_message=(
                f"topic {name!r} does not exist; create it with `headwater topics create {name}`"
            ),
        )

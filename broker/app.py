"""One broker: the parts wired together, started and stopped in order.

Start: ZooKeeper session -> cluster id -> log directories (recovery runs in a worker thread)
-> topic configs (the change watch set, the logs on disk given their overrides) -> listener
-> registration in ``/brokers/ids`` -> controller candidacy -> ``broker.ready`` (logged
with the bound port; harnesses wait for it instead of sleeping).
Stop (SIGTERM/SIGINT): stop accepting and answer what is in flight, give up the
controllership, deregister, flush and close the logs with the clean-shutdown marker, close
the ZooKeeper session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from broker import sasl, tls
from broker.admin import TopicAdmin
from broker.authorizer import (
    Authorizer,
    principal,
    topic_not_authorized,
    transactional_id_not_authorized,
)
from broker.broker_configs import BrokerConfigs
from broker.config import (
    RACK_AWARE_SELECTOR,
    TLS_PROTOCOLS,
    BrokerConfig,
    ConfigError,
    listener_name,
)
from broker.connection_quotas import ConnectionQuotas
from broker.controller.controller import Controller
from broker.controller.election import ControllerElection
from broker.coordinator.coordinator import GroupCoordinator
from broker.coordinator.doubt import Doubt
from broker.coordinator.markers import MarkerWriter
from broker.coordinator.producer_ids import ProducerIdManager
from broker.coordinator.share_state import ShareStateClient
from broker.coordinator.transactions import TransactionCoordinator
from broker.coordinator.verification import TxnVerifier
from broker.deferred import Deferred
from broker.dynamic_config import TopicConfigs
from broker.heap import HeapSettler
from broker.log import LogConfig
from broker.log.cleaner import CleanerConfig, LogCleaner
from broker.log.log import wall_clock_ms
from broker.log.manager import LogManager, TopicPartition
from broker.metadata import MetadataCache, id_of_unknown_name
from broker.metrics import MetricsServer, Sample, counter, gauge, gc_samples
from broker.network import PeerConnection, PeerError, PeerPool, PeerTls
from broker.quotas import QuotaManager
from broker.registration import BrokerRegistrar, get_or_create_cluster_id
from broker.replica.isr import IsrUpdater
from broker.replica.manager import ReplicaManager
from broker.replica.shares import ShareManager
from broker.replica.throttle import ReplicationQuota
from broker.server import MUTE, ON_CLOSE, BrokerServer, CloseConnection
from broker.stall import StallGuard
from broker.tokens import DelegationTokens
from broker.zk import (
    BrokerRegistration,
    PartitionState,
    SessionState,
    ZkBridge,
    ZkError,
    ZkUnavailable,
    log_dir_event_json,
    paths,
)
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse,
    ApiKey,
    ControlledShutdownRequest,
    ControlledShutdownResponse,
    Coordinator,
    CoordinatorType,
    ElectionType,
    ElectLeadersPartitionResult,
    ElectLeadersRequest,
    ElectLeadersResponse,
    ElectLeadersTopicResult,
    FetchRequest,
    FetchResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    LeaderAndIsrRequest,
    LeaderAndIsrResponse,
    LeaderIdAndEpoch,
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse,
    MetadataBroker,
    MetadataPartition,
    MetadataRequest,
    MetadataResponse,
    MetadataTopic,
    NodeEndpoint,
    OngoingPartitionReassignment,
    OngoingTopicReassignment,
    ProduceRequest,
    ProduceResponse,
    ReassignablePartitionResponse,
    ReassignableTopicResponse,
    RemainingPartition,
    StopReplicaRequest,
    StopReplicaResponse,
    UpdateMetadataRequest,
    UpdateMetadataResponse,
)
from protocol.errors import (
    ApiError,
    BrokerNotAvailableError,
    ElectionNotNeededError,
    FencedLeaderEpochError,
    InvalidRequestError,
    LeaderNotAvailableError,
    NotControllerError,
    NotLeaderOrFollowerError,
    StaleBrokerEpochError,
    StaleControllerEpochError,
    TopicAuthorizationFailedError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from protocol.framing import FileRegion, RequestHeader
from protocol.topic_id import TOPIC_IDS_FEATURE, ZERO_TOPIC_ID, format_topic_id
from protocol.txn_log import TRANSACTION_TOPIC

__all__ = ["Broker"]

_ZK_STOP_STEP_S = 5.0
_REGISTRATION_ANSWER_S = 5.0  # a request stamped with our epoch waits for our create's answer
_FIRST_METADATA_WAIT_S = 5.0
_LISTENER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*://(?P<host>[^:/]*):(?P<port>\d+)$")
_FLUSH_CHECK_S = 1.0
_VOUCH_POLL_S = 0.1  # how often a vouch's ZooKeeper read looks at the session meanwhile


_ACTIVE_CONTROLLER = gauge("headwater_active_controller", "1 on the active controller.")
_OFFLINE = gauge(
    "headwater_offline_partitions",
    "Partitions without a live leader (reported by the active controller).",
)
_CONNECTIONS = gauge("headwater_connections", "Open client and broker connections.")
_STALLS = counter(
    "headwater_loop_stalls_total",
    "Times this broker's loop stalled past a third of its ZooKeeper session and held "
    "requests until the session was known.",
)
_DOUBTS = counter(
    "headwater_coordinator_doubts_total",
    "Times this broker's coordinators could not tell whether they still coordinated what "
    "they held (ZooKeeper session in doubt, or a stall's hold) and refused meanwhile.",
)
_DOUBT_REFUSALS = counter(
    "headwater_coordinator_doubt_refusals_total",
    "Group and transaction requests refused (COORDINATOR_NOT_AVAILABLE) while in doubt.",
)


def _serve(call: Callable[[Any], Any]) -> Callable[[RequestHeader, Any], Any]:
    """A handler from a method taking only the request. Its result goes to the server as
    it is (a response, a coroutine, or a Deferred): a plain method's answer is written in
    the loop iteration that read the request, with no task in between."""

    def handler(header: RequestHeader, request: Any) -> Any:
        return call(request)

    return handler


def _serve_mutation(call: Callable[..., Any]) -> Callable[[RequestHeader, Any], Any]:
    """As :func:`_serve`, for a request the controller mutation quota counts: strict
    (over the quota is refused) unless the request is a Kafka client's of a version
    that predates THROTTLING_QUOTA_EXCEEDED (then it is only throttled, as Kafka's)."""

    def handler(header: RequestHeader, request: Any) -> Any:
        return call(request, strict=not getattr(header, "permissive_quota", False))

    return handler


def _host_port(listener: str) -> tuple[str, int]:
    match = _LISTENER.match(listener)
    assert match is not None, listener  # validated by broker.config
    return match["host"] or "0.0.0.0", int(match["port"])


class Broker:
    """A broker process's state. ``await start()``, then ``await stop()``."""

    def __init__(self, config: BrokerConfig, *, heap: HeapSettler | None = None) -> None:
        """``heap``: the daemon's, to keep the long-lived state out of full collections
        (it freezes the process's objects, so a broker built inside a test has none)."""
        self.config = config
        self._heap = heap
        self.broker_id = config.broker_id
        self.cluster_id = ""
        self.port = -1
        self.ports: dict[str, int] = {}
        """Each listener's bound port, by name (``port``: the first listener's)."""
        self.metadata = MetadataCache()
        self._zk: ZkBridge | None = None
        self._logs: LogManager | None = None
        self._replicas: ReplicaManager | None = None
        self._admin: TopicAdmin | None = None
        self._servers: dict[str, BrokerServer] = {}
        self._tls: tls.TlsContexts | None = None
        self._peer_tls: PeerTls | None = None  # (None: the inter-broker listener is plaintext)
        self._connection_quotas: ConnectionQuotas | None = None
        self._peer_login: sasl.PeerLogin | None = None
        self._credentials: sasl.ScramCredentials | None = None
        self._sasl: dict[str, sasl.SaslListener] = {}
        self._acl = Authorizer()
        self._quotas: QuotaManager | None = None
        self._tokens: DelegationTokens | None = None
        self._broker_configs: BrokerConfigs | None = None
        self._registrar: BrokerRegistrar | None = None
        self._election: ControllerElection | None = None
        self._controller: Controller | None = None
        self._controller_epoch = -1  # the newest seen: older controllers are fenced
        self._housekeeping: asyncio.Task[None] | None = None
        self._log_dir_note: asyncio.Task[None] | None = None
        self._log_dir_failed = False
        self._topic_configs: TopicConfigs | None = None
        self._config_tasks: set[asyncio.Task[None]] = set()
        self._metrics: MetricsServer | None = None
        self._coordinator: GroupCoordinator | None = None
        self._shares: ShareManager | None = None
        self._cleaner: LogCleaner | None = None
        self._producer_ids: ProducerIdManager | None = None
        self._transactions: TransactionCoordinator | None = None
        self._peers: list[PeerPool] = []  # the marker writer's, KIP-890's checks
        self._rebalancing: asyncio.Task[None] | None = None
        self.metrics_port = -1
        self._stopping = False
        self._sessions_lost = 0  # ZooKeeper sessions lost (and leaderships fenced)
        self._closing_session = False  # stop() closes it: its end is not a loss
        self._stall: StallGuard | None = None
        self._doubt: Doubt | None = None
        self._log = structlog.get_logger("headwater.broker").bind(broker_id=self.broker_id)

    def _peer_pool(self) -> PeerPool:
        listener = self.config.inter_broker_listener
        pool = PeerPool(
            lambda broker: self.metadata.address(broker, listener),
            tls=self._peer_tls,
            login=self._peer_login,
        )
        self._peers.append(pool)
        return pool

    @property
    def controller_id(self) -> int:
        return self._election.controller_id if self._election else -1

    async def start(self) -> None:
        cfg = self.config
        self._tls = tls.TlsContexts(cfg)  # a bad keystore or truststore stops us here
        server_tls = self._tls.listening()
        self._peer_tls = self._tls.peer_context if self._tls.peer is not None else None
        self._peer_login = sasl.peer_login(cfg)  # as does a bad JAAS line
        sasl.sasl_listeners(cfg, None)
        self._zk = ZkBridge(
            cfg["zookeeper.connect"], session_timeout_ms=cfg["zookeeper.session.timeout.ms"]
        )
        self._credentials = sasl.ScramCredentials(self._zk)
        self._sasl = sasl.sasl_listeners(cfg, self._credentials)
        for listener in self._sasl.values():
            if listener.bearer is not None and not listener.bearer.signed:
                self._log.warning(
                    "sasl.oauthbearer_unsecured",
                    listener=listener.name,
                    hint="OAUTHBEARER takes unsigned tokens, which anyone can write: set "
                    "sasl.oauthbearer.jwks.endpoint.url outside development",
                )
        self._acl = Authorizer(self._zk, cfg)
        self._quotas = QuotaManager(self._zk, cfg)
        self._tokens = DelegationTokens(self._zk, cfg, self._acl)
        for listener in self._sasl.values():
            listener.tokens = self._tokens
        await self._zk.start(timeout_s=cfg["zookeeper.connection.timeout.ms"] / 1000)
        self.cluster_id = await get_or_create_cluster_id(self._zk)
        await self._acl.start()  # every ACL read before anything is served
        await self._quotas.start()
        await self._tokens.start()  # (nothing to do while tokens are off)
        self._broker_configs = BrokerConfigs(self._zk, cfg)
        self._broker_configs.tls = self._tls
        self._broker_configs.on_change(self._on_keystore)  # a dynamic one: before we listen
        await self._broker_configs.start()  # the logs open with the dynamic defaults
        if self._tls is not None and self._tls.error is not None:
            # not served on the static files instead: a truststore changed to take a CA
            # out would take it back in (Kafka does not start either)
            raise ConfigError(
                f"this broker's dynamic TLS files do not load: {self._tls.error}; put a "
                "good file back at that path (its own dynamic configs change only through "
                "a running broker: this one)"
            )
        self._log = self._log.bind(cluster_id=self.cluster_id)
        self._logs = LogManager(
            cfg.log_dirs,
            broker_id=self.broker_id,
            cluster_id=self.cluster_id,
            default_config=cfg.log_config(),
        )
        loop = asyncio.get_running_loop()
        self._logs.add_offline_listener(lambda tp: _threadsafe(loop, self._log_went_offline, tp))
        await asyncio.to_thread(self._logs.startup)  # recovery may read whole segments
        self._topic_configs = TopicConfigs(
            self._zk, cfg.log_config(), self._logs, broker_id=self.broker_id
        )
        # a dynamic default that arrived while the logs were opening
        self._logs.default_config = self._topic_configs.defaults
        self._broker_configs.on_change(self._on_broker_config)  # from when the copy was made
        await self._topic_configs.start()  # the logs on disk get their topics' overrides
        protocols = cfg.listener_protocols
        self._admin = TopicAdmin(
            self._zk,
            cfg,
            self.metadata,
            self._acl,
            broker_configs=self._broker_configs,
            quotas=self._quotas,
            topic_configs=self._topic_configs,
        )
        self._replicas = ReplicaManager(
            self.broker_id,
            self._logs,
            self.metadata,
            self._topic_configs.load,
            IsrUpdater(self._zk, self.broker_id),
            replica_lag_time_max_ms=cfg["replica.lag.time.max.ms"],
            replica_fetch_wait_max_ms=cfg["replica.fetch.wait.max.ms"],
            replica_fetch_max_bytes=cfg["replica.fetch.max.bytes"],
            fetch_session_slots=cfg["max.incremental.fetch.session.cache.slots"],
            config_known=self._topic_configs.ready,
            peer_tls=self._peer_tls,
            peer_login=self._peer_login,
            inter_broker_listener=cfg.inter_broker_listener,
            authorizer=self._acl,
            # dynamic broker configs: read on each use, so a change applies at once
            leader_quota=ReplicationQuota(lambda: cfg["leader.replication.throttled.rate"]),
            follower_quota=ReplicationQuota(lambda: cfg["follower.replication.throttled.rate"]),
            move_quota=ReplicationQuota(
                lambda: cfg["replica.alter.log.dirs.io.max.bytes.per.second"]
            ),
            move_threads=cfg["num.replica.alter.log.dirs.threads"] or len(cfg.log_dirs),
            rack_aware_reads=cfg["replica.selector.class"] == RACK_AWARE_SELECTOR,
            state_known=self._state_known,
        )
        self._start_coordinators()
        await self._listen(protocols, server_tls)
        advertised = self._advertised()
        host, port = advertised[cfg.inter_broker_listener]
        self._registrar = BrokerRegistrar(
            self._zk,
            BrokerRegistration(
                self.broker_id,
                host,
                port,
                rack=cfg["broker.rack"] or None,
                endpoints=[f"{n}://{h}:{p}" for n, (h, p) in advertised.items()],
                protocols={n: protocols[n] for n in advertised},
                features={TOPIC_IDS_FEATURE: (1, 1)},
            ),
        )
        await self._registrar.register()
        self._controller = Controller(
            self._zk,
            self.broker_id,
            unclean_leader_election=lambda: bool(cfg["unclean.leader.election.enable"]),
            peer_tls=self._peer_tls,
            peer_login=self._peer_login,
            inter_broker_listener=cfg.inter_broker_listener,
        )
        self._topic_configs.on_change(self._on_topic_config)
        self._election = ControllerElection(
            self._zk, self.broker_id, self._controller.activate, self._on_resigned
        )
        await self._election.start()
        self._zk.on_state_change(self._on_session_state)
        self._arm_stall_guard()
        self._housekeeping = asyncio.get_running_loop().create_task(self._keep_house())
        if cfg["metrics.port"] >= 0:
            self._metrics = MetricsServer(self._collect_metrics)
            self.metrics_port = await self._metrics.start(cfg["metrics.host"], cfg["metrics.port"])
        adv_host, adv_port = next(iter(advertised.values()))
        self._log.info(
            "broker.ready",
            host=adv_host,
            port=adv_port,
            listeners={n: p for n, (_, p) in advertised.items()},
            metrics_port=self.metrics_port,
        )
        self._changed()  # the logs loaded: settle once the controller's first requests are in

    def _log_went_offline(self, tp: TopicPartition) -> None:
        """A disk error took ``tp``'s log offline: the controller is told (Kafka's
        LogDirEventNotification, KIP-112) and asks which of ours are offline, to hand
        their leadership to other replicas. One note for the offline logs of a moment."""
        self._log.error("broker.log_offline", topic=tp.topic, partition=tp.partition)
        self._log_dir_failed = True
        if self._log_dir_note is None or self._log_dir_note.done():
            self._log_dir_note = asyncio.get_running_loop().create_task(self._note_log_dir())

    async def _note_log_dir(self) -> None:
        while self._log_dir_failed and not self._stopping:
            self._log_dir_failed = False
            assert self._zk is not None
            try:
                await self._zk.create(
                    f"{paths.LOG_DIR_EVENTS}/{paths.LOG_DIR_EVENT_PREFIX}",
                    log_dir_event_json(self.broker_id),
                    sequence=True,
                    makepath=True,
                )
            except Exception as exc:  # the controller must hear of it: again, later
                self._log.warning("broker.log_dir_event_failed", error=repr(exc))
                self._log_dir_failed = True
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self._stopping = True
        self._log.info("broker.stopping")
        zk_up = self._zk is not None and self._zk.connected
        # a broker that never registered (its id refused at start) has nothing to hand over
        registered = self._registrar is not None and self._registrar.epoch >= 0
        if self.config["controlled.shutdown.enable"] and registered and zk_up:
            await self._controlled_shutdown()
        if self._servers:
            # (a stall's hold goes on meanwhile: what it holds is closed, never served)
            await asyncio.gather(*(server.stop() for server in self._servers.values()))
        if self._stall is not None:
            self._stall.stop()
        await self._stop_parts()
        for pool in self._peers:
            pool.close()
        if self._controller is not None and self._controller.active:
            await self._controller.drain(_ZK_STOP_STEP_S if zk_up else 0.5)
        # ZooKeeper may be gone: its steps are bounded, and the data is closed regardless
        if self._election is not None:
            await self._bounded("giving up the controllership", self._election.stop())
        if self._controller is not None:
            await self._controller.deactivate()
        if self._registrar is not None:
            await self._bounded("deregistering", self._registrar.deregister())
        await self._close_storage()
        if self._zk is not None:
            self._closing_session = True
            await self._bounded("closing the ZooKeeper session", self._zk.stop())
        self._log.info("broker.stopped")

    async def _stop_parts(self) -> None:
        """Our tasks, then the parts that follow ZooKeeper or serve on their own, in start
        order reversed."""
        for task in (self._housekeeping, self._log_dir_note):
            if task is not None:
                task.cancel()
        for part in (
            self._topic_configs,
            self._broker_configs,
            self._acl,
            self._quotas,
            self._tokens,
            self._metrics,
            self._coordinator,
            self._transactions,
        ):
            if part is not None:
                await part.stop()
        if self._shares is not None:
            self._shares.close()

    async def _close_storage(self) -> None:
        """Cleaner and fetchers stopped, high watermarks checkpointed, logs flushed and
        closed."""
        if self._cleaner is not None:
            await self._cleaner.stop()
        if self._replicas is not None:
            await self._replicas.shutdown()
        if self._logs is not None:
            if self._replicas is not None:
                await self._logs.checkpoint_high_watermarks(self._replicas.high_watermarks())
            await self._logs.flushes_done()  # a flush task cancelled above: its thread runs on
            await asyncio.to_thread(self._logs.shutdown)

    async def _bounded(self, doing: str, step: Awaitable[None]) -> None:
        """A stop step that needs ZooKeeper: skipped with a warning if it cannot finish
        (ZooKeeper down), since the session's expiry does the same job later."""
        connected = self._zk is not None and self._zk.connected
        try:
            await asyncio.wait_for(step, _ZK_STOP_STEP_S if connected else 0.5)
        except (TimeoutError, ZkError) as exc:
            self._log.warning("broker.stop_step_skipped", step=doing, error=repr(exc))

    async def _listen(self, protocols: dict[str, str], server_tls: ssl.SSLContext | None) -> None:
        """A server on each listener; an SSL one with TLS (Kafka's listeners, by name)."""
        cfg = self.config
        # dynamic broker configs, read on each new connection
        self._connection_quotas = ConnectionQuotas(
            cfg.__getitem__,
            cfg.inter_broker_listener,
            len(cfg["listeners"]),
            ip_rate=None if self._quotas is None else self._quotas.connection_rate,
        )
        for item in cfg["listeners"]:
            name = listener_name(item)
            host, port = _host_port(item)
            server = BrokerServer(
                self._handlers(name),
                max_frame_bytes=cfg["socket.request.max.bytes"],
                max_idle_ms=cfg["connections.max.idle.ms"],
                sasl=self._sasl.get(name),
                quotas=self._connection_quotas,
                kafka_protocol=name in cfg.kafka_protocol_listeners,
                request_quotas=self._quotas,
                backlog=cfg["socket.listen.backlog.size"],
            )
            self._servers[name] = server
            secure = server_tls if protocols[name] in TLS_PROTOCOLS else None
            self.ports[name] = await server.start(host, port, tls=secure, listener=name)
        self.port = next(iter(self.ports.values()))

    def _advertised(self) -> dict[str, tuple[str, int]]:
        """Where each listener is reached (a port-0 listener: the port it bound)."""
        out: dict[str, tuple[str, int]] = {}
        for item in self.config.advertised_listeners:
            name = listener_name(item)
            host, port = _host_port(item)
            out[name] = ("127.0.0.1" if host == "0.0.0.0" else host, port or self.ports[name])
        return out

    def _handlers(self, listener: str = "PLAINTEXT") -> dict[ApiKey, Any]:
        assert self._replicas is not None and self._admin is not None
        assert self._coordinator is not None and self._producer_ids is not None
        assert self._transactions is not None
        replicas, admin, groups = self._replicas, self._admin, self._coordinator
        transactions = self._transactions
        credentials = self._credentials
        assert credentials is not None
        acl = self._acl

        def cluster(operation: Operation, what: str, handler: Any) -> Any:
            """``handler`` for those allowed ``operation`` on the cluster (Kafka's checks
            of inter-broker and cluster-wide admin requests)."""

            def guarded(header: RequestHeader, request: Any) -> Any:
                acl.check_cluster(operation, what)
                return handler(header, request)

            return guarded

        def init_producer_id(header: RequestHeader, request: Any) -> Any:
            if request.transactional_id is not None:  # Write on the id: the coordinator's
                return transactions.init_producer_id(request)
            # Kafka's: IDEMPOTENT_WRITE on the cluster, or WRITE on some topic
            if not acl.allowed_on_cluster(Operation.IDEMPOTENT_WRITE) and not (
                acl.allowed_any_topic(Operation.WRITE)
            ):
                acl.check_cluster(Operation.IDEMPOTENT_WRITE, "produce idempotently")
            return producer_ids.init_producer_id(request)

        producer_ids = self._producer_ids
        inter_broker = Operation.CLUSTER_ACTION
        quotas = self._quotas
        assert quotas is not None
        tokens = self._tokens
        assert tokens is not None

        fetch = _fetch_within_quotas(replicas, quotas, self.metadata)
        produce = _produce_handler(replicas, quotas, acl)
        assert self._shares is not None
        share_fetch = _serve(self._shares.share_fetch)
        share_acknowledge = _serve(self._shares.share_acknowledge)
        if listener in self.config.kafka_protocol_listeners:  # KIP-951's answers
            fetch = _telling_leaders(fetch, self.metadata, listener, _FETCH_NAMES_LEADERS)
            produce = _telling_leaders(produce, self.metadata, listener, _PRODUCE_NAMES_LEADERS)
            share_fetch = _telling_leaders(share_fetch, self.metadata, listener, 0)
            share_acknowledge = _telling_leaders(share_acknowledge, self.metadata, listener, 0)

        return {
            ApiKey.PRODUCE: produce,
            ApiKey.FETCH: fetch,
            ApiKey.LIST_OFFSETS: _serve(replicas.list_offsets),
            ApiKey.DELETE_RECORDS: _serve(replicas.delete_records),
            ApiKey.DESCRIBE_LOG_DIRS: _serve(replicas.describe_log_dirs),
            ApiKey.ALTER_REPLICA_LOG_DIRS: _serve(replicas.alter_replica_log_dirs),
            ApiKey.OFFSET_FOR_LEADER_EPOCH: _serve(replicas.offsets_for_leader_epoch),
            ApiKey.METADATA: functools.partial(self._metadata, listener=listener),
            ApiKey.CREATE_TOPICS: _serve_mutation(admin.create_topics),
            ApiKey.DELETE_TOPICS: _serve_mutation(admin.delete_topics),
            ApiKey.CREATE_PARTITIONS: _serve_mutation(admin.create_partitions),
            ApiKey.DESCRIBE_CONFIGS: _serve(admin.describe_configs),
            ApiKey.ALTER_CONFIGS: _serve(admin.alter_configs),
            ApiKey.INCREMENTAL_ALTER_CONFIGS: _serve(admin.incremental_alter_configs),
            ApiKey.FIND_COORDINATOR: _each_key(
                lambda request: (
                    transactions.find_coordinator(request, listener)
                    if request.key_type == CoordinatorType.TRANSACTION
                    else groups.find_coordinator(request, listener)
                )
            ),
            ApiKey.ADD_PARTITIONS_TO_TXN: _serve(transactions.add_partitions),
            ApiKey.ADD_OFFSETS_TO_TXN: _serve(transactions.add_offsets),
            ApiKey.END_TXN: _serve(transactions.end_txn),
            ApiKey.TXN_OFFSET_COMMIT: _serve(groups.txn_offset_commit),
            ApiKey.LIST_TRANSACTIONS: _serve(transactions.list_transactions),
            ApiKey.DESCRIBE_TRANSACTIONS: _serve(transactions.describe_transactions),
            ApiKey.DESCRIBE_PRODUCERS: _serve(replicas.describe_producers),
            ApiKey.OFFSET_COMMIT: _serve(groups.offset_commit),
            ApiKey.OFFSET_FETCH: _serve(groups.offset_fetch),
            ApiKey.JOIN_GROUP: _serve(groups.join_group),
            ApiKey.CONSUMER_GROUP_HEARTBEAT: _serve(groups.consumer_group_heartbeat),
            ApiKey.CONSUMER_GROUP_DESCRIBE: _serve(groups.consumer_group_describe),
            ApiKey.SHARE_GROUP_HEARTBEAT: _serve(groups.share_groups.heartbeat),
            ApiKey.SHARE_GROUP_DESCRIBE: _serve(groups.share_groups.describe),
            ApiKey.DESCRIBE_SHARE_GROUP_OFFSETS: _serve(groups.share_groups.describe_offsets),
            ApiKey.SHARE_FETCH: share_fetch,
            ApiKey.SHARE_ACKNOWLEDGE: share_acknowledge,
            ApiKey.READ_SHARE_GROUP_STATE: cluster(
                inter_broker, "read a share group's state", _serve(groups.share_groups.read_state)
            ),
            ApiKey.WRITE_SHARE_GROUP_STATE: cluster(
                inter_broker,
                "store a share group's state",
                _serve(groups.share_groups.write_state),
            ),
            ApiKey.SYNC_GROUP: _serve(groups.sync_group),
            ApiKey.HEARTBEAT: _serve(groups.heartbeat),
            ApiKey.LEAVE_GROUP: _serve(groups.leave_group),
            ApiKey.LIST_GROUPS: _serve(groups.list_groups),
            ApiKey.DESCRIBE_GROUPS: _serve(groups.describe_groups),
            ApiKey.DELETE_GROUPS: _serve(groups.delete_groups),
            ApiKey.OFFSET_DELETE: _serve(groups.delete_offsets),
            ApiKey.INIT_PRODUCER_ID: init_producer_id,
            ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: cluster(
                Operation.DESCRIBE, "describe users", _serve(credentials.describe)
            ),
            ApiKey.ALTER_USER_SCRAM_CREDENTIALS: cluster(
                Operation.ALTER, "change users", _serve(credentials.alter)
            ),
            ApiKey.DESCRIBE_ACLS: _serve(acl.describe),
            ApiKey.DESCRIBE_CLIENT_QUOTAS: cluster(
                Operation.DESCRIBE_CONFIGS, "describe quotas", _serve(quotas.describe)
            ),
            ApiKey.ALTER_CLIENT_QUOTAS: cluster(
                Operation.ALTER_CONFIGS, "change quotas", _serve(quotas.alter)
            ),
            ApiKey.CREATE_DELEGATION_TOKEN: _serve(tokens.create),
            ApiKey.RENEW_DELEGATION_TOKEN: _serve(tokens.renew),
            ApiKey.EXPIRE_DELEGATION_TOKEN: _serve(tokens.expire),
            ApiKey.DESCRIBE_DELEGATION_TOKEN: _serve(tokens.describe),
            ApiKey.CREATE_ACLS: _serve(acl.create),
            ApiKey.DELETE_ACLS: _serve(acl.delete),
            ApiKey.WRITE_TXN_MARKERS: cluster(
                inter_broker, "write transaction markers", _serve(replicas.write_txn_markers)
            ),
            ApiKey.LEADER_AND_ISR: cluster(inter_broker, "send LeaderAndIsr", self._leader_and_isr),
            ApiKey.STOP_REPLICA: cluster(inter_broker, "send StopReplica", self._stop_replica),
            ApiKey.UPDATE_METADATA: cluster(
                inter_broker, "send UpdateMetadata", self._update_metadata
            ),
            ApiKey.CONTROLLED_SHUTDOWN: cluster(
                inter_broker, "shut a broker down", self._handle_controlled_shutdown
            ),
            ApiKey.ELECT_LEADERS: cluster(Operation.ALTER, "elect leaders", self._elect_leaders),
            ApiKey.ALTER_PARTITION_REASSIGNMENTS: cluster(
                Operation.ALTER, "move partitions", self._alter_reassignments
            ),
            ApiKey.LIST_PARTITION_REASSIGNMENTS: cluster(
                Operation.DESCRIBE, "list partition moves", self._list_reassignments
            ),
        }

    def _start_coordinators(self) -> None:
        """The group and transaction coordinators, and the log cleaner between them."""
        cfg = self.config
        assert self._replicas is not None and self._admin is not None and self._zk is not None
        # one for both coordinators: a doubt is logged and counted once, and the group
        # coordinator's 100-ms tick notices it on an idle broker
        self._doubt = Doubt(self._state_known, broker_id=self.broker_id)
        self._coordinator = GroupCoordinator(
            self.broker_id,
            cfg,
            self.metadata,
            self._replicas,
            self._admin,
            authorizer=self._acl,
            doubt=self._doubt,
        )
        self._coordinator.start()
        self._shares = ShareManager(
            self._replicas,
            self.metadata,
            self._acl,
            enabled=bool(cfg["group.share.enable"]),
            lock_ms=int(cfg["group.share.record.lock.duration.ms"]),
            delivery_limit=int(cfg["group.share.delivery.count.limit"]),
            max_in_flight=int(cfg["group.share.partition.max.record.locks"]),
            max_sessions=int(cfg["group.share.max.share.sessions"]),
            on_close=ON_CLOSE.get,
            group_configs=self._admin.group_configs,
            store=ShareStateClient(
                self.broker_id,
                self.metadata,
                self._peer_pool(),
                lambda: int(self.config["offsets.topic.num.partitions"]),
                local_read=self._coordinator.share_groups.read_state,
                local_write=self._coordinator.share_groups.write_state,
            ),
        )
        self._start_cleaner()
        self._producer_ids = ProducerIdManager(self.broker_id, self._zk)
        self._transactions = TransactionCoordinator(
            self.broker_id,
            cfg,
            self.metadata,
            self._replicas,
            self._admin,
            producer_ids=self._producer_ids,
            markers=MarkerWriter(self.broker_id, self.metadata, self._replicas, self._peer_pool()),
            authorizer=self._acl,
            doubt=self._doubt,
            still_leads=self._still_leads_txn_log,
        )
        self._transactions.start()
        if cfg["transaction.partition.verification.enable"]:
            self._replicas.txn_verify = TxnVerifier(
                self.broker_id,
                self.metadata,
                self._peer_pool(),  # its own: a check never waits behind a marker write
                lambda: int(self.config["transaction.state.log.num.partitions"]),
                self._transactions.verify_partitions,
            ).verify

    def _on_session_state(self, state: str) -> None:
        if self._closing_session:
            return  # closing our own session is not news
        # (a broker stopping still serves, through its controlled shutdown: a loss fences)
        if state == SessionState.LOST and self._replicas is not None:
            self._replicas.fence_leaders("this broker's ZooKeeper session expired")
            self._sessions_lost += 1

    def _state_known(self) -> bool:
        """Whether what this broker holds of the cluster is current: its ZooKeeper session
        surely alive (``ZkBridge.session_current``), and no stall's hold under way
        (broker/stall.py). A broker cut off from ZooKeeper may have lost its roles
        without hearing of it yet."""
        zk = self._zk
        return (
            zk is not None
            and zk.session_current
            and not (self._stall is not None and self._stall.holding)
        )

    async def _still_leads_txn_log(self, partition: int) -> bool:
        """ZooKeeper's word that this broker leads ``partition`` of the transaction log at
        the leader epoch it has for it (the coordinator's check before an answer from its
        state alone): a controller that could not reach it may have moved it, or bumped
        its epoch, meanwhile. False if ZooKeeper cannot say."""
        assert self._zk is not None and self._replicas is not None
        local = self._replicas.partitions.get(TopicPartition(TRANSACTION_TOPIC, partition))
        if local is None or not local.is_leader:
            return False
        path = paths.partition_state(TRANSACTION_TOPIC, partition)
        zk = self._zk
        # kazoo queues a read while it reconnects, and the answer waits for ZooKeeper:
        # given up on once the session is in doubt (a review: a fence, and the produce
        # whose KIP-890 check asked for it, were held for a whole outage)
        read = asyncio.ensure_future(zk.get(path))
        try:
            while not read.done():
                await asyncio.wait({read}, timeout=_VOUCH_POLL_S)
                if not read.done() and not zk.session_current:
                    return False
            raw, _ = read.result()
            state = PartitionState.from_json(path, raw)
        except ZkError:
            return False
        finally:
            read.cancel()
        return state.leader == self.broker_id and state.leader_epoch == local.leader_epoch

    def _arm_stall_guard(self) -> None:
        """From here on, a stall of the loop holds what the listeners read until the
        session is known (broker/stall.py): the state it would be served from is ours."""
        assert self._zk is not None
        session_s = self._zk.negotiated_session_timeout_s or (
            self.config["zookeeper.session.timeout.ms"] / 1000
        )
        guard = StallGuard(
            self._session_known, threshold_s=session_s / 3, hold_max_s=session_s, log=self._log
        )
        self._stall = guard

        def granted(seconds: float) -> None:
            # ZooKeeper may grant less than asked (at most 20 of its ticks): the stall
            # that can cost the session is a third of what it granted
            guard.threshold_s, guard.hold_max_s = seconds / 3, seconds

        self._zk.on_negotiated_timeout(granted)
        for server in self._servers.values():
            server.stall = guard
        guard.start()

    def _session_known(self) -> Awaitable[str]:
        """The stall guard's check (broker/stall.py), called at the trip: a ZooKeeper
        round trip on this broker's session, retried while ZooKeeper is out of reach. It
        answers on the old session only while that lives, and on a new one only after the
        old one's loss reached :meth:`_on_session_state` (kazoo reports it first, in the
        same queue). Which of the two, for the log: a loss counted since the trip."""
        return self._round_trip(self._sessions_lost)

    async def _round_trip(self, lost: int) -> str:
        assert self._zk is not None
        while True:
            try:
                await self._zk.exists(paths.broker(self.broker_id))
            except ZkUnavailable:
                if self._sessions_lost == lost:
                    await asyncio.sleep(0.05)  # kazoo reconnects, or reports the loss
                    if self._sessions_lost == lost:
                        continue
            if self._sessions_lost > lost:  # (no need to wait for the new session)
                return "the ZooKeeper session was lost: this broker's leaderships are fenced"
            return "the ZooKeeper session is alive"

    async def _controlled_shutdown(self) -> None:
        """Ask the controller to move our leaderships away first (Kafka's controlled
        shutdown), so clients fail over before we stop instead of after a timeout."""
        cfg = self.config
        attempts = cfg["controlled.shutdown.max.retries"] + 1
        for attempt in range(attempts):
            controller = self.metadata.address(self.controller_id, cfg.inter_broker_listener)
            if controller is None:
                remaining = ["no controller known"]
            else:
                peer = PeerConnection(
                    *controller,
                    request_timeout_ms=30_000,
                    tls=self._peer_tls,
                    login=self._peer_login,
                )
                try:
                    sent_epoch = self._broker_epoch()
                    response: ControlledShutdownResponse = await peer.request(
                        ApiKey.CONTROLLED_SHUTDOWN,
                        ControlledShutdownRequest(
                            broker_id=self.broker_id, broker_epoch=sent_epoch
                        ),
                    )
                    registrar = self._registrar
                    if (
                        response.error_code == StaleBrokerEpochError.code
                        and sent_epoch == self._broker_epoch()
                        and not (registrar is not None and registrar.creating)
                    ):
                        # a later run of this broker registered: not ours to hand over (our
                        # own registration changing meanwhile is retried, with its epoch)
                        self._log.warning(
                            "broker.controlled_shutdown_refused", reason=response.error_message
                        )
                        return
                    if response.error_code:
                        remaining = [response.error_message or str(response.error_code)]
                    else:
                        remaining = [
                            f"{p.topic_name}-{p.partition_index}"
                            for p in response.remaining_partitions
                        ]
                except PeerError as exc:
                    remaining = [str(exc)]
                finally:
                    peer.close()
            if not remaining:
                self._log.info("broker.controlled_shutdown_done", attempts=attempt + 1)
                if self._replicas is not None:
                    # the controller moved every leadership away; clients with old metadata
                    # must hear NOT_LEADER now, not have writes taken that will be cut
                    self._replicas.fence_leaders("this broker is shutting down")
                return
            self._log.info(
                "broker.controlled_shutdown_retry", attempt=attempt + 1, remaining=remaining[:5]
            )
            if attempt + 1 < attempts:
                await asyncio.sleep(cfg["controlled.shutdown.retry.backoff.ms"] / 1000)
        self._log.warning("broker.controlled_shutdown_incomplete")

    async def _handle_controlled_shutdown(
        self, header: RequestHeader, request: ControlledShutdownRequest
    ) -> Any:
        controller = self._active_controller()
        remaining = await controller.controlled_shutdown(request.broker_id, request.broker_epoch)
        return ControlledShutdownResponse(
            remaining_partitions=[
                RemainingPartition(topic_name=t, partition_index=p) for t, p in remaining
            ]
        )

    async def _elect_leaders(self, header: RequestHeader, request: ElectLeadersRequest) -> Any:
        controller = self._active_controller()
        if request.election_type not in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
            raise InvalidRequestError(
                f"unknown election type {request.election_type} (0 preferred, 1 unclean)"
            )
        tps = (
            None
            if request.topic_partitions is None
            else [(t.topic, p) for t in request.topic_partitions for p in t.partitions]
        )
        outcome: dict[tuple[str, int], ApiError | None]
        if request.election_type == ElectionType.UNCLEAN:
            outcome = await controller.elect_unclean_now(tps)
        else:
            outcome = await controller.elect_preferred(tps)
            if tps is None:  # Kafka's: all partitions asked for, those moved are answered
                outcome = {
                    tp: e for tp, e in outcome.items() if not isinstance(e, ElectionNotNeededError)
                }
        by_topic: dict[str, list[ElectLeadersPartitionResult]] = {}
        for (topic, partition), error in sorted(outcome.items()):
            by_topic.setdefault(topic, []).append(
                ElectLeadersPartitionResult(
                    partition_id=partition,
                    error_code=0 if error is None else error.code,
                    error_message=None if error is None else error.message,
                )
            )
        return ElectLeadersResponse(
            replica_election_results=[
                ElectLeadersTopicResult(topic=t, partition_result=r) for t, r in by_topic.items()
            ]
        )

    async def _alter_reassignments(
        self, header: RequestHeader, request: AlterPartitionReassignmentsRequest
    ) -> Any:
        controller = self._active_controller()
        wanted: dict[tuple[str, int], list[int] | None] = {}
        twice: set[tuple[str, int]] = set()
        for t in request.topics:
            for p in t.partitions:
                tp = (t.name, p.partition_index)
                if tp in wanted:
                    twice.add(tp)
                wanted[tp] = p.replicas
        outcome: dict[tuple[str, int], ApiError | None] = {
            tp: InvalidRequestError(f"{tp[0]}-{tp[1]} is named twice in the request")
            for tp in twice
        }
        asked = {tp: r for tp, r in wanted.items() if tp not in twice}
        outcome.update(await controller.reassign(asked))
        by_topic: dict[str, list[ReassignablePartitionResponse]] = {}
        for (topic, partition), error in sorted(outcome.items()):
            by_topic.setdefault(topic, []).append(
                ReassignablePartitionResponse(
                    partition_index=partition,
                    error_code=0 if error is None else error.code,
                    error_message=None if error is None else error.message,
                )
            )
        return AlterPartitionReassignmentsResponse(
            responses=[ReassignableTopicResponse(name=t, partitions=r) for t, r in by_topic.items()]
        )

    async def _list_reassignments(
        self, header: RequestHeader, request: ListPartitionReassignmentsRequest
    ) -> Any:
        controller = self._active_controller()
        tps = (
            None
            if request.topics is None
            else [(t.name, p) for t in request.topics for p in t.partition_indexes]
        )
        by_topic: dict[str, list[OngoingPartitionReassignment]] = {}
        for (topic, partition), move in sorted((await controller.list_reassignments(tps)).items()):
            by_topic.setdefault(topic, []).append(
                OngoingPartitionReassignment(
                    partition_index=partition,
                    replicas=list(move.replicas),
                    adding_replicas=list(move.adding),
                    removing_replicas=list(move.removing),
                )
            )
        return ListPartitionReassignmentsResponse(
            topics=[OngoingTopicReassignment(name=t, partitions=p) for t, p in by_topic.items()]
        )

    def _collect_metrics(self) -> list[Sample]:
        assert self._replicas is not None and self._servers
        controller = self._controller
        active = controller is not None and controller.active
        return [
            *self._replicas.metrics(),
            *(self._cleaner.metrics() if self._cleaner is not None else ()),
            *(self._transactions.metrics() if self._transactions is not None else ()),
            (_ACTIVE_CONTROLLER, {}, int(active)),
            (_OFFLINE, {}, controller.offline_partitions() if controller and active else 0),
            (_CONNECTIONS, {}, sum(len(s.connections) for s in self._servers.values())),
            (_STALLS, {}, self._stall.stalls if self._stall is not None else 0),
            (_DOUBTS, {}, self._doubt.doubts if self._doubt is not None else 0),
            (_DOUBT_REFUSALS, {}, self._doubt.refusals if self._doubt is not None else 0),
            *gc_samples(),
        ]

    def _start_cleaner(self) -> None:
        """The log cleaner compacts the compacted logs hosted here, leader's or follower's
        copy alike (as in Kafka, each replica compacts its own)."""
        cfg = self.config
        if not cfg["log.cleaner.enable"]:
            return
        assert self._logs is not None
        config = CleanerConfig(
            enable=True,
            threads=cfg["log.cleaner.threads"],
            dedupe_buffer_size=cfg["log.cleaner.dedupe.buffer.size"],
            backoff_ms=cfg["log.cleaner.backoff.ms"],
        )
        self._cleaner = LogCleaner(
            self._logs, config, cleanable_end=self._cleanable_end, config_ready=self._config_ready
        )
        self._cleaner.start()

    def _cleanable_end(self, tp: TopicPartition) -> int:
        """Compaction stops at the last stable offset, as Kafka's: a record above the high
        watermark may yet be truncated, one in a transaction still open may yet be
        aborted; neither may make older records of its key go."""
        assert self._replicas is not None
        partition = self._replicas.partitions.get(tp)
        if partition is None:
            return 0
        return partition.log.last_stable_offset(partition.high_watermark)

    def _config_ready(self, tp: TopicPartition) -> bool:
        """Whether the partition's topic config was read from ZooKeeper: until it is, its
        log has the broker's defaults, which retention and the cleaner must not act on
        (see :mod:`broker.dynamic_config`)."""
        assert self._topic_configs is not None
        return self._topic_configs.ready(tp.topic)

    def _active_controller(self) -> Controller:
        if self._controller is None or not self._controller.active:
            raise NotControllerError(
                f"broker {self.broker_id} is not the controller (broker "
                f"{self.controller_id} is); ask it"
            )
        return self._controller

    async def _on_resigned(self) -> None:
        if self._controller is not None:
            await self._controller.deactivate()
            self._changed(let_go=True)  # the controller's view of the cluster is let go
        self._log.info("controller.inactive")

    async def _keep_house(self) -> None:
        """Periodic work: flushes due by ``flush.ms``, ISR shrink checks, high-watermark
        checkpoints, retention. Each on its own interval, on one timer."""
        assert self._replicas is not None and self._logs is not None
        replicas, logs = self._replicas, self._logs
        cfg = self.config
        loop = asyncio.get_running_loop()
        intervals = {
            "retention": cfg["log.retention.check.interval.ms"] / 1000,
            "isr": cfg["replica.lag.time.max.ms"] / 2000,
            "hw": cfg["replica.high.watermark.checkpoint.interval.ms"] / 1000,
            "rebalance": cfg["leader.imbalance.check.interval.seconds"],
            "producers": cfg["producer.id.expiration.check.interval.ms"] / 1000,
        }
        due = {name: loop.time() + every for name, every in intervals.items()}
        tick_s = min(_FLUSH_CHECK_S, *intervals.values())
        while True:
            await asyncio.sleep(tick_s)
            self._guarded("flush", replicas.flush_due_logs)
            if self._heap is not None and self._heap.due():
                self._guarded("heap", self._settle_heap)
            now = loop.time()
            for name, every in intervals.items():
                if now < due[name]:
                    continue
                due[name] = now + every
                if name == "isr":
                    self._guarded("isr", replicas.shrink_isrs)
                elif name == "producers":
                    self._guarded("producers", self._expire_producers)
                elif name == "rebalance":
                    idle = self._rebalancing is None or self._rebalancing.done()
                    if cfg["auto.leader.rebalance.enable"] and self._controller and idle:
                        # its own task: it waits for the controller's queue
                        self._rebalancing = loop.create_task(self._rebalance())
                elif name == "hw":
                    try:
                        await logs.checkpoint_high_watermarks(replicas.high_watermarks())
                    except OSError as exc:
                        self._log.warning("broker.hw_checkpoint_failed", error=str(exc))
                else:
                    try:
                        await self._apply_retention()
                    except Exception:
                        self._log.exception("broker.housekeeping_failed", step="retention")

    def _changed(self, *, let_go: bool = False) -> None:
        if self._heap is not None:
            self._heap.changed(let_go=let_go)

    def _changing(self, *, dropped: int = 0) -> contextlib.AbstractContextManager[None]:
        if self._heap is None:
            return contextlib.nullcontext()
        return self._heap.changing(dropped=dropped)

    def _settle_heap(self) -> None:
        assert self._heap is not None
        thawed = self._heap.settle()
        self._log.info(
            "broker.heap_settled",
            thawed=thawed,
            frozen=self._heap.frozen,
            took_ms=round(self._heap.last_ms, 1),
        )

    def _expire_producers(self) -> None:
        """Forget idempotent producers not heard from in ``producer.id.expiration.ms``, in
        every log here (leaders' and followers' alike, as each keeps its own state)."""
        assert self._logs is not None
        now_ms = wall_clock_ms()  # the logs' clock: what "heard of" was stamped with
        expiration_ms = self.config["producer.id.expiration.ms"]
        expired = sum(log.producers.expire(now_ms, expiration_ms) for _, log in self._logs)
        if expired:
            self._log.info("broker.producer_ids_expired", count=expired)

    def _guarded(self, what: str, step: Callable[[], None]) -> None:
        """One periodic step; its failure is logged and the others go on."""
        try:
            step()
        except Exception:
            self._log.exception("broker.housekeeping_failed", step=what)

    async def _apply_retention(self) -> None:
        """Every log here, leader's or follower's, by its own live config (as Kafka: each
        replica trims its own log); never past the high watermark this broker knows, so
        the log start offset never passes it; never a log whose topic config is not read
        yet. The unlinks and the checkpoint run in worker threads
        (:meth:`LogManager.apply_retention`)."""
        assert self._logs is not None and self._replicas is not None
        await self._logs.apply_retention(self._replicas.high_watermarks(), self._config_ready)

    def _on_topic_config(self, topic: str, config: LogConfig) -> None:
        """A topic's config changed. Kafka's controller elects leaders for the topic's
        offline partitions as soon as it allows unclean election, not at the next broker
        change; ours does the same (every broker hears the change; the active controller
        acts)."""
        if config.unclean_leader_election_enable:
            self._elect_unclean(topic)

    def _on_broker_config(self, changed: set[str]) -> None:
        """Dynamic broker configs changed here: the logs of topics without an override
        follow the new defaults, and a default that now allows unclean election elects
        leaders for the offline partitions at once, as a topic's change does."""
        assert self._logs is not None  # registered once the logs are
        defaults = self.config.log_config()
        self._logs.default_config = defaults
        if self._topic_configs is not None:
            self._topic_configs.set_defaults(defaults)
        if "unclean.leader.election.enable" in changed and defaults.unclean_leader_election_enable:
            self._elect_unclean(None)

    def _on_keystore(self, changed: set[str]) -> None:
        """``ssl.keystore.location`` or ``ssl.truststore.location`` changed, or was set
        again to load a file rotated in place: the SSL listeners and the connections to
        other brokers show the new certificate, and trust the new CAs, from their next
        handshake; connections made keep theirs."""
        files = changed & {"ssl.keystore.location", "ssl.truststore.location"}
        if not files or self._tls is None:
            return
        try:
            loaded = self._tls.reload(self.config)
        except ConfigError as exc:  # changed since it was checked: the old ones stay
            self._log.error("broker.tls_files_not_loaded", error=str(exc))
            return
        if loaded:
            self._log.info(
                "broker.tls_files_loaded", **{n.split(".")[1]: self.config[n] for n in files}
            )

    def _elect_unclean(self, topic: str | None) -> None:
        """If this broker is the controller: elect leaders for ``topic``'s offline
        partitions (None: every topic's) now that unclean election may."""
        controller = self._controller
        if controller is None or not controller.active:
            return
        task = asyncio.get_running_loop().create_task(controller.elect_unclean(topic))
        self._config_tasks.add(task)
        task.add_done_callback(self._config_tasks.discard)

    async def _rebalance(self) -> None:
        assert self._controller is not None
        try:
            await self._controller.rebalance_leaders()
        except Exception:
            self._log.exception("broker.housekeeping_failed", step="rebalance")

    # --- requests from the controller ---------------------------------------------------

    @property
    def waiting_for_stale_registration(self) -> bool:
        """Whether the start waits for its last run's registration to expire."""
        return self._registrar is not None and self._registrar.waiting_for_stale

    async def _registration_known(self, broker_epoch: int) -> None:
        """A request stamped with a broker epoch while our registration's create is under
        way may be for it (the controller read the new znode before our answer came back):
        its epoch is compared once ours is known."""
        registrar = self._registrar
        if broker_epoch >= 0 and registrar is not None and registrar.creating:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(registrar.registered.wait(), _REGISTRATION_ANSWER_S)

    def _broker_epoch(self) -> int:
        """This run's registration's czxid (KIP-380's broker epoch); -1 before it is known."""
        return self._registrar.epoch if self._registrar is not None else -1

    def _fence(self, controller_epoch: int, what: str, broker_epoch: int = -1) -> None:
        if self.waiting_for_stale_registration:
            # meant for this broker's last run, dead but still registered: the controller
            # learns of the death when its session expires, and of this run after that
            raise BrokerNotAvailableError(
                f"{what} for broker {self.broker_id}'s last run: this run is not "
                "registered yet (it waits for that run's session to expire)"
            )
        ours = self._broker_epoch()
        if broker_epoch >= 0 and (ours < 0 or broker_epoch < ours):
            # sent to an earlier run of this broker (KIP-380): the controller has not seen
            # this run's registration yet (or there is none yet), and will send it its own
            # state when it has
            raise StaleBrokerEpochError(
                f"{what} for broker epoch {broker_epoch}; this broker's is {ours}"
            )
        if controller_epoch < self._controller_epoch:
            raise StaleControllerEpochError(
                f"{what} from controller epoch {controller_epoch}; the current one is "
                f"{self._controller_epoch}"
            )
        self._controller_epoch = controller_epoch

    async def _leader_and_isr(self, header: RequestHeader, request: LeaderAndIsrRequest) -> Any:
        assert self._replicas is not None
        await self._registration_known(request.broker_epoch)
        self._fence(request.controller_epoch, "LeaderAndIsr", request.broker_epoch)
        with self._changing():
            errors = await self._replicas.become_leader_or_follower(
                request.partition_states, request.live_leaders, request.topic_ids
            )
        return LeaderAndIsrResponse(partition_errors=errors)

    async def _stop_replica(self, header: RequestHeader, request: StopReplicaRequest) -> Any:
        assert self._replicas is not None
        await self._registration_known(request.broker_epoch)
        self._fence(request.controller_epoch, "StopReplica", request.broker_epoch)
        with self._changing(dropped=len(request.partitions)):
            errors = await self._replicas.stop_replicas(
                request.partitions, delete=request.delete_partitions
            )
        return StopReplicaResponse(partition_errors=errors)

    async def _update_metadata(self, header: RequestHeader, request: UpdateMetadataRequest) -> Any:
        await self._registration_known(request.broker_epoch)
        self._fence(request.controller_epoch, "UpdateMetadata", request.broker_epoch)
        deleted = self.metadata.update(request)
        if self._coordinator is not None:
            if deleted:
                self._coordinator.topics_deleted(deleted)
            self._coordinator.topics_changed()
        self._changed()
        return UpdateMetadataResponse()

    # --- Metadata -----------------------------------------------------------------------

    async def _metadata(
        self, header: RequestHeader, request: MetadataRequest, *, listener: str = "PLAINTEXT"
    ) -> Any:
        """Metadata, with each broker's address on the listener the request came in on
        (a broker without that listener is left out, as in Kafka)."""
        assert self._admin is not None
        asked_at = getattr(header, "kafka_version", None)
        if request.topic_ids and asked_at is not None and asked_at < 12:
            # Kafka's: v10-11 carry the field, but only v12 may name a topic by it
            raise InvalidRequestError(
                f"Topic IDs are not supported in requests for version {asked_at}"
            )
        cache = self.metadata
        if cache.controller_epoch < 0:
            # just started: what the cluster looks like arrives from the controller in a
            # moment; answering before would call every topic unknown
            await cache.wait_for(lambda: cache.controller_epoch >= 0, _FIRST_METADATA_WAIT_S)
        described = self._acl.decider(Operation.DESCRIBE, ResourceType.TOPIC)
        if request.topics is None:  # all: those it may not DESCRIBE are left out (Kafka's)
            names = [n for n in sorted(cache.topics) if described(n)]
        else:
            names = request.topics
        # those asked by id first, whole, with no await: a deletion seen during one of the
        # awaits below would leave the name of the id's topic free to be auto-created
        by_id = [self._by_id(topic_id, described) for topic_id in request.topic_ids]
        topics = []
        for name in names:
            if not described(name):  # whether or not it exists: not told
                error = topic_not_authorized(name, Operation.DESCRIBE)
                topics.append(
                    MetadataTopic(name=name, error_code=error.code, error_message=error.message)
                )
                continue
            found = self._topic_row(name)
            if found is None:
                found = await self._missing_topic(name, request.allow_auto_topic_creation)
            topics.append(found)
        topics.extend(by_id)
        brokers = []
        for b in sorted(cache.brokers.values(), key=lambda b: b.id):
            address = cache.address(b.id, listener)
            if address is not None:
                brokers.append(
                    MetadataBroker(node_id=b.id, host=address[0], port=address[1], rack=b.rack)
                )
        return MetadataResponse(
            brokers=brokers,
            cluster_id=self.cluster_id,
            controller_id=self.controller_id,
            topics=topics,
        )

    def _topic_row(self, name: str) -> MetadataTopic | None:
        """A known topic's row of a Metadata answer; None if it is not known."""
        cache = self.metadata
        partitions = cache.topics.get(name)
        if partitions is None:
            return None
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
        return MetadataTopic(
            name=name,
            topic_id=cache.topic_ids.get(name, ZERO_TOPIC_ID),
            is_internal=name.startswith("__"),
            partitions=rows,
        )

    def _by_id(self, topic_id: bytes, described: Callable[[str], bool]) -> MetadataTopic:
        """The row of a topic asked for by id (KIP-516), or the one that refuses it. An
        id no topic has is UNKNOWN_TOPIC_ID; a topic the client may not describe is
        TOPIC_AUTHORIZATION_FAILED without its name (Kafka's: ids are not secret, names
        are). An id never creates a topic."""
        name = self.metadata.topic_names.get(topic_id)
        found = None if name is None else self._topic_row(name)
        if name is None or found is None:
            error: ApiError = UnknownTopicIdError(
                f"no topic has id {format_topic_id(topic_id)} (deleted, or never made)"
            )
        elif not described(name):
            error = TopicAuthorizationFailedError(
                f"{principal()} may not Describe the topic with id {format_topic_id(topic_id)}"
            )
        else:
            return found
        return MetadataTopic(
            name="", topic_id=topic_id, error_code=error.code, error_message=error.message
        )

    async def _missing_topic(self, name: str, allow_auto_create: bool) -> MetadataTopic:
        assert self._admin is not None
        auto = (
            allow_auto_create
            and self.config["auto.create.topics.enable"]
            and name not in self.metadata.deleting
        )
        if auto and not self._admin.may_create(name):
            # Kafka's: a topic it would create but may not is an authorization error, so
            # the producer fails at once instead of waiting for a topic never made
            error = topic_not_authorized(name, Operation.CREATE)
            return MetadataTopic(name=name, error_code=error.code, error_message=error.message)
        if auto:
            await self._admin.auto_create(name)
        controller = self._controller
        # the controller has it, and its news has not reached this broker's own cache yet
        # (other brokers may have it first): clients take a controller's
        # UNKNOWN_TOPIC_OR_PARTITION as the truth, so this one must not say it
        being_made = (
            controller is not None
            and controller.active
            and name in controller.assignments
            and name not in controller.deleting
        )
        if auto or being_made:
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


def _produced_bytes(request: ProduceRequest) -> int:
    return sum(len(p.records) for t in request.topics for p in t.partitions if p.records)


def _fetched_bytes(response: FetchResponse) -> int:
    total = 0
    for topic in response.topics:
        for p in topic.partitions:
            records = p.records
            if records is not None:
                total += records.size if isinstance(records, FileRegion) else len(records)
    return total


def _each_key(find: Callable[[FindCoordinatorRequest], Any]) -> Callable[..., Any]:
    """The FindCoordinator handler: one key (Headwater's, Kafka's v0-3), or each of a
    Kafka v4+ request's keys answered on its own (KIP-699: a client asks for many groups'
    coordinators at once; one key's error is its own)."""

    def found(header: RequestHeader, request: FindCoordinatorRequest) -> Any:
        if not request.keys:
            return find(request)
        return _coordinators(find, request)

    return found


async def _coordinators(
    find: Callable[[FindCoordinatorRequest], Any], request: FindCoordinatorRequest
) -> FindCoordinatorResponse:
    answers = []
    for key in request.keys:
        try:
            one = find(FindCoordinatorRequest(key=key, key_type=request.key_type))
            if inspect.isawaitable(one):
                one = await one
            answers.append(Coordinator(key=key, node_id=one.node_id, host=one.host, port=one.port))
        except ApiError as exc:
            answers.append(Coordinator(key=key, error_code=exc.code, error_message=exc.message))
    return FindCoordinatorResponse(coordinators=answers)


_FETCH_NAMES_LEADERS = 16
_PRODUCE_NAMES_LEADERS = 10
"""Kafka's first Fetch and Produce versions whose answers name the leader (KIP-951)."""
_NOT_THE_LEADER = frozenset({NotLeaderOrFollowerError.code, FencedLeaderEpochError.code})


def _telling_leaders(
    handler: Callable[[RequestHeader, Any], Any], metadata: MetadataCache, listener: str, since: int
) -> Callable[[RequestHeader, Any], Any]:
    """``handler``, whose answers to a Kafka client of version ``since`` or later name,
    for each partition refused as not led here, the leader this broker knows of and
    where it is reached (KIP-951): the client goes there at once, without asking for
    metadata first (a leader moving costs it one round trip instead of three)."""

    def telling(header: RequestHeader, request: Any) -> Any:
        response = handler(header, request)
        if getattr(header, "kafka_version", -1) < since:
            return response
        if inspect.iscoroutine(response):
            return _then_told(response, metadata, listener)
        _when_answered(response, lambda answer: _name_leaders(answer, metadata, listener))
        return response

    return telling


async def _then_told(pending: Awaitable[Any], metadata: MetadataCache, listener: str) -> Any:
    answer = await pending
    _name_leaders(answer, metadata, listener)
    return answer


def _name_leaders(response: Any, metadata: MetadataCache, listener: str) -> None:
    """Fill in KIP-951's ``current_leader`` and ``node_endpoints`` of a Fetch or Produce
    answer (nothing to do, the usual case, costs one look at each partition's code)."""
    if response is None:
        return
    leaders: set[int] = set()
    for topic in response.topics:
        name = getattr(topic, "topic", None) or getattr(topic, "name", "")
        for p in topic.partitions:
            if p.error_code not in _NOT_THE_LEADER or not name:
                continue
            index = getattr(p, "partition_index", None)
            state = metadata.partition(name, p.index if index is None else index)
            if state is None or state.leader < 0:
                continue
            p.current_leader = LeaderIdAndEpoch(
                leader_id=state.leader, leader_epoch=state.leader_epoch
            )
            leaders.add(state.leader)
    for broker_id in sorted(leaders):
        address = metadata.address(broker_id, listener)
        broker = metadata.brokers.get(broker_id)
        if address is not None and broker is not None:
            response.node_endpoints.append(
                NodeEndpoint(node_id=broker_id, host=address[0], port=address[1], rack=broker.rack)
            )


def _produce_handler(
    replicas: ReplicaManager, quotas: QuotaManager, acl: Authorizer
) -> Callable[[RequestHeader, ProduceRequest], Any]:
    """The Produce handler: Write on a transactional id, the producer's quota, acks=0."""

    def produce(header: RequestHeader, request: ProduceRequest) -> Any:
        # not async: acks=0/1 is answered in the loop iteration that read it (acks=all
        # returns a Deferred, answered from the fetch that moves the high watermark)
        txn_id = request.transactional_id
        try:
            if txn_id is not None and not acl.allowed(
                Operation.WRITE, ResourceType.TRANSACTIONAL_ID, txn_id
            ):
                raise transactional_id_not_authorized(txn_id, Operation.WRITE)
            response = replicas.produce(request)
        except ApiError as exc:
            if request.acks == 0:  # refused whole: no answer to carry it either (Kafka's)
                raise CloseConnection(f"acks=0 produce refused: {exc.message}") from exc
            raise
        if inspect.isawaitable(response) and not isinstance(response, Deferred):
            return _after(response, request)  # checked with a coordinator (KIP-890)
        return answer(response, request)

    async def _after(pending: Awaitable[ProduceResponse], request: ProduceRequest) -> Any:
        return answer(await pending, request)

    def answer(response: Any, request: ProduceRequest) -> Any:
        throttle = (
            quotas.record("producer_byte_rate", _produced_bytes(request)) if quotas.active else 0
        )
        if throttle:
            _throttle(response, throttle)
        if request.acks != 0:
            return response
        if throttle:  # no answer to carry it: the connection is muted all the same
            MUTE.get()(throttle)
        assert isinstance(response, ProduceResponse)  # acks=0 never waits
        failed = [p for t in response.topics for p in t.partitions if p.error_code]
        if failed:  # no answer to carry the error: closing is how the client learns
            raise CloseConnection(f"acks=0 produce failed: {failed[0].error_message}")
        return None

    return produce


def _fetch_within_quotas(
    replicas: ReplicaManager, quotas: QuotaManager, metadata: MetadataCache
) -> Callable[[RequestHeader, FetchRequest], Any]:
    """The Fetch handler: a consumer's bytes counted against its quota (a follower's are
    replication, not a client's), a parked fetch's once it is answered. Kafka's Fetch
    v13+ names topics by id: they are named here, and the answer carries the ids."""

    def fetch(header: RequestHeader, request: FetchRequest) -> Any:
        ids = (
            _name_topics(request, metadata)
            if getattr(header, "kafka_version", 0) >= _FETCH_BY_ID
            else None
        )
        response = replicas.fetch(request, by_id=ids is not None)
        if ids is not None:
            _when_answered(response, lambda answer: _give_ids(answer, ids, metadata))
        if request.replica_id >= 0 or not quotas.active:
            return response
        if isinstance(response, Deferred):
            meter = quotas.meter("consumer_byte_rate")  # who asked: not who answers

            def count(done: Deferred[FetchResponse]) -> None:
                with contextlib.suppress(Exception):  # a failed fetch read nothing
                    answer = done.result()
                    answer.throttle_time_ms = meter(_fetched_bytes(answer))

            response.add_listener(count)  # before the server's: stamped, then sent
            return response
        response.throttle_time_ms = quotas.record("consumer_byte_rate", _fetched_bytes(response))
        return response

    return fetch


_FETCH_BY_ID = 13  # Kafka's first Fetch version naming topics by id (KIP-516)


def _name_topics(request: FetchRequest, metadata: MetadataCache) -> dict[str, bytes]:
    """Each topic (and each forgotten one) of a Fetch v13+ named from its id; returns
    the ids by those names. An id that names no topic here goes by a name none has
    (:func:`~broker.metadata.unknown_id_name`): read, it is answered UNKNOWN_TOPIC_ID.

    A session holds such partitions under those names; :meth:`MetadataCache.fetch_name`
    changing renames them (see :mod:`broker.replica.fetch_session`)."""
    name = metadata.fetch_name
    ids: dict[str, bytes] = {}
    for topic in request.topics:
        topic.topic = name(topic.topic_id)
        ids[topic.topic] = topic.topic_id
    for forgotten in request.forgotten_topics_data:
        forgotten.topic = name(forgotten.topic_id)
    return ids


def _give_ids(response: FetchResponse, ids: Mapping[str, bytes], metadata: MetadataCache) -> None:
    """A Fetch v13+'s answer: each topic with its id (the one asked by; for a session's
    partition not named this time, the id its name stands for, as the session holds it).
    One of an id that names no topic here was answered UNKNOWN_TOPIC_ID (see
    ReplicaManager._readable), and loses the name it went by."""
    for topic in response.topics:
        name = topic.topic
        unknown = id_of_unknown_name(name)
        topic.topic_id = ids.get(name) or unknown or metadata.topic_ids.get(name, ZERO_TOPIC_ID)
        if unknown is not None:
            topic.topic = ""


def _when_answered(response: Any, then: Callable[[Any], None]) -> None:
    """``then(answer)``: now, or once a parked request is answered (before the server's
    listener encodes it)."""
    if isinstance(response, Deferred):

        def done(answered: Deferred[Any]) -> None:
            with contextlib.suppress(Exception):  # a failed fetch: an error answer
                then(answered.result())

        response.add_listener(done)
    elif response is not None:
        then(response)


def _throttle(response: Any, throttle_ms: int) -> None:
    """Say ``throttle_ms`` in the response (the server mutes the connection for it); a
    Deferred gets it once it is answered."""
    if isinstance(response, Deferred):

        def stamp(done: Deferred[Any]) -> None:
            with contextlib.suppress(Exception):  # a failed produce: an error answer
                done.result().throttle_time_ms = throttle_ms

        response.add_listener(stamp)
    elif response is not None:
        response.throttle_time_ms = throttle_ms


def _threadsafe(loop: asyncio.AbstractEventLoop, call: Callable[..., Any], *args: Any) -> None:
    """``call(*args)`` on ``loop``, from any thread; dropped once the loop is closed (a
    broker stopping: nothing is left to tell)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(call, *args)

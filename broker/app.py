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
from typing import Any

import structlog

from broker.config import BrokerConfig
from broker.controller.election import ControllerElection
from broker.log.manager import LogManager
from broker.registration import BrokerRegistrar, get_or_create_cluster_id
from broker.server import BrokerServer
from broker.zk import BrokerRegistration, NoNode, ZkBridge, ZkError, paths
from protocol.apis import (
    ApiKey,
    MetadataBroker,
    MetadataRequest,
    MetadataResponse,
    MetadataTopic,
)
from protocol.errors import UnknownTopicOrPartitionError
from protocol.framing import RequestHeader

__all__ = ["Broker"]

_LISTENER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*://(?P<host>[^:/]*):(?P<port>\d+)$")


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
        self.live_brokers: dict[int, BrokerRegistration] = {}
        self._zk: ZkBridge | None = None
        self._logs: LogManager | None = None
        self._server: BrokerServer | None = None
        self._registrar: BrokerRegistrar | None = None
        self._election: ControllerElection | None = None
        self._refresh: asyncio.Task[None] | None = None
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
        host, port = _host_port(cfg["listeners"][0])
        self._server = BrokerServer(
            {ApiKey.METADATA: self._metadata},
            max_frame_bytes=cfg["socket.request.max.bytes"],
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
        await self._refresh_brokers()
        self._election = ControllerElection(
            self._zk, self.broker_id, self._on_elected, self._on_resigned
        )
        await self._election.start()
        self._log.info("broker.ready", host=adv_host, port=adv_port)

    async def stop(self) -> None:
        self._log.info("broker.stopping")
        if self._server is not None:
            await self._server.stop()
        if self._election is not None:
            await self._election.stop()
        if self._registrar is not None:
            try:
                await self._registrar.deregister()
            except ZkError as exc:
                self._log.warning("broker.deregister_failed", error=str(exc))
        if self._refresh is not None:
            self._refresh.cancel()
        if self._logs is not None:
            await asyncio.to_thread(self._logs.shutdown)
        if self._zk is not None:
            await self._zk.stop()
        self._log.info("broker.stopped")

    # --- what this broker knows of the cluster --------------------------------------------

    def _on_brokers_changed(self, event: object) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_brokers())

    async def _refresh_brokers(self) -> None:
        assert self._zk is not None
        try:
            ids = await self._zk.get_children(paths.BROKER_IDS, watch=self._on_brokers_changed)
        except ZkError as exc:
            self._log.warning("broker.refresh_failed", error=str(exc))
            return
        live: dict[int, BrokerRegistration] = {}
        for name in ids:
            try:
                data, stat = await self._zk.get(paths.broker(int(name)))
            except NoNode:
                continue  # gone between the two calls
            live[int(name)] = BrokerRegistration.from_json(int(name), data, stat)
        self.live_brokers = live

    async def _on_elected(self, epoch: int) -> None:
        self._log.info("controller.active", controller_epoch=epoch)

    async def _on_resigned(self) -> None:
        self._log.info("controller.inactive")

    # --- handlers ------------------------------------------------------------------------

    async def _metadata(self, header: RequestHeader, request: MetadataRequest) -> Any:
        brokers = [
            MetadataBroker(node_id=b.broker_id, host=b.host, port=b.port, rack=b.rack)
            for b in sorted(self.live_brokers.values(), key=lambda b: b.broker_id)
        ]
        # Topics arrive with the controller's topic lifecycle; until then none exist.
        topics = [
            MetadataTopic(
                name=name,
                error_code=UnknownTopicOrPartitionError.code,
                error_message=f"topic {name!r} does not exist",
            )
            for name in request.topics or []
        ]
        return MetadataResponse(
            brokers=brokers,
            cluster_id=self.cluster_id,
            controller_id=self.controller_id,
            topics=topics,
        )

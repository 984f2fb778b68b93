"""The controller's line to one broker: requests sent in order, retried until delivered.

As Kafka's ControllerChannelManager: one queue and one sender task per live broker, so the
controller's event handling never waits on a slow or dead broker. A request that cannot be
sent (connection refused, reset, timed out) is retried with backoff until it is answered
or the broker leaves the cluster (the controller then closes the channel, and the waiting
futures are cancelled). A broker that comes back gets a new channel and the full state.

A broker of an older build (a rolling upgrade) may not speak the newest UpdateMetadata
or LeaderAndIsr: when it refuses one as an unsupported version, this channel sends it the
version below from then on (the fields added since are left out). UpdateMetadata v0 is
always the whole picture: at v0 each update is built whole at the time it is sent
(``full_metadata``), since an incremental one cannot be said in v0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import structlog

from broker.network import PeerConnection, PeerError, PeerLogin, PeerTls
from protocol.apis import (
    APIS,
    ApiKey,
    LeaderAndIsrRequest,
    Request,
    StopReplicaRequest,
    UpdateMetadataRequest,
)
from protocol.errors import UnsupportedVersionError

__all__ = ["BrokerChannel"]

_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
_EPOCHED = (LeaderAndIsrRequest, StopReplicaRequest, UpdateMetadataRequest)
"""The requests that carry the broker epoch they are meant for."""
_STEPPED = (ApiKey.UPDATE_METADATA, ApiKey.LEADER_AND_ISR)
"""The requests a broker of an older build is sent at an older version (a rolling upgrade)."""


class _Item(NamedTuple):
    api_key: ApiKey
    request: Request
    future: asyncio.Future[Any]


class BrokerChannel:
    """Requests to one broker; :meth:`send` returns the future of the answer."""

    def __init__(
        self,
        broker_id: int,
        host: str,
        port: int,
        *,
        request_timeout_ms: int = 30_000,
        full_metadata: Callable[[], UpdateMetadataRequest] | None = None,
        broker_epoch: int = -1,
        tls: PeerTls | None = None,
        login: PeerLogin | None = None,
    ) -> None:
        self.broker_id = broker_id
        self.host = host
        self.port = port
        self.broker_epoch = broker_epoch
        """The registration (czxid) this channel talks to: stamped on every request, so a
        later run of the broker refuses what was meant for this one (KIP-380). A channel
        is replaced when the broker re-registers."""
        self._full_metadata = full_metadata
        self.versions = dict.fromkeys(_STEPPED, 0)
        """The version each of :data:`_STEPPED` goes at to this broker: the newest it
        speaks, found by its refusals."""
        self._newest()
        self._peer = PeerConnection(
            host, port, request_timeout_ms=request_timeout_ms, tls=tls, login=login
        )
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._last: asyncio.Future[Any] | None = None  # answered last: they go in order
        self._sending: _Item | None = None
        self.reachable = True
        """False from a failed attempt until an answer: a broker down (or stopping)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._log = structlog.get_logger("headwater.controller").bind(to_broker=broker_id)

    def send(self, api_key: ApiKey, request: Request) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(api_key, request, future))
        self._last = future
        return future

    def _newest(self) -> None:
        for api_key in _STEPPED:
            self.versions[api_key] = APIS[api_key].max_version

    async def drain(self) -> None:
        """Wait until every request sent so far is answered (or cancelled)."""
        if self._last is not None and not self._last.done():
            await asyncio.wait([self._last])

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._peer.close()
        if self._sending is not None:  # in flight: its waiter (a deletion's) must not hang
            self._sending.future.cancel()
            self._sending = None
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def _run(self) -> None:
        while True:
            item = self._sending = await self._queue.get()
            for attempt in itertools.count():
                if item.future.cancelled():
                    break
                request, version = item.request, self.versions.get(item.api_key)
                if (
                    item.api_key == ApiKey.UPDATE_METADATA
                    and version == 0
                    and self._full_metadata is not None
                ):
                    request = self._full_metadata()
                if (
                    self.broker_epoch >= 0
                    and isinstance(request, _EPOCHED)
                    and request.broker_epoch == -1
                ):
                    request = dataclasses.replace(request, broker_epoch=self.broker_epoch)
                try:
                    response = await self._peer.request(item.api_key, request, version)
                except PeerError as exc:
                    self.reachable = False
                    self._newest()  # the broker may come back as another build
                    delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                    if attempt in (0, 5) or attempt % 50 == 0:
                        self._log.info(
                            "controller.send_retry", api=APIS[item.api_key].name, error=str(exc)
                        )
                    await asyncio.sleep(delay)
                    continue
                if (
                    version
                    and response.error_code == UnsupportedVersionError.code
                    and (
                        version > 1
                        or item.api_key != ApiKey.UPDATE_METADATA
                        or self._full_metadata is not None
                    )
                ):
                    # an older build: a version down (UpdateMetadata v3 adds topic ids, v2
                    # the brokers' listeners, v1 incremental updates, and at v0 the same
                    # update goes whole; LeaderAndIsr v1 adds topic ids)
                    self.versions[item.api_key] = version - 1
                    if item.api_key == ApiKey.UPDATE_METADATA and version == 1:
                        self._log.warning(
                            "controller.broker_without_incremental_metadata",
                            detail=response.error_message,
                        )
                    continue
                self.reachable = True
                if not item.future.done():
                    item.future.set_result(response)
                break

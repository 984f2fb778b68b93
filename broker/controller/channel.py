"""The controller's line to one broker: requests sent in order, retried until delivered.

As Kafka's ControllerChannelManager: one queue and one sender task per live broker, so the
controller's event handling never waits on a slow or dead broker. A request that cannot be
sent (connection refused, reset, timed out) is retried with backoff until it is answered
or the broker leaves the cluster (the controller then closes the channel, and the waiting
futures are cancelled). A broker that comes back gets a new channel and the full state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, NamedTuple

import structlog

from broker.network import PeerConnection, PeerError
from protocol.apis import APIS, ApiKey, Request

__all__ = ["BrokerChannel"]

_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)


class _Item(NamedTuple):
    api_key: ApiKey
    request: Request
    future: asyncio.Future[Any]


class BrokerChannel:
    """Requests to one broker; :meth:`send` returns the future of the answer."""

    def __init__(
        self, broker_id: int, host: str, port: int, *, request_timeout_ms: int = 30_000
    ) -> None:
        self.broker_id = broker_id
        self.host = host
        self.port = port
        self._peer = PeerConnection(host, port, request_timeout_ms=request_timeout_ms)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._log = structlog.get_logger("headwater.controller").bind(to_broker=broker_id)

    def send(self, api_key: ApiKey, request: Request) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(api_key, request, future))
        return future

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._peer.close()
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            for attempt in itertools.count():
                if item.future.cancelled():
                    break
                try:
                    response = await self._peer.request(item.api_key, item.request)
                except PeerError as exc:
                    delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                    if attempt in (0, 5) or attempt % 50 == 0:
                        self._log.info(
                            "controller.send_retry", api=APIS[item.api_key].name, error=str(exc)
                        )
                    await asyncio.sleep(delay)
                    continue
                if not item.future.done():
                    item.future.set_result(response)
                break

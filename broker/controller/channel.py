"""The controller's line to one broker: requests sent in order, retried until delivered.

As Kafka's ControllerChannelManager: one queue and one sender task per live broker, so the
controller's event handling never waits on a slow or dead broker. A request that cannot be
sent (connection refused, reset, timed out) is retried with backoff until it is answered
or the broker leaves the cluster (the controller then closes the channel, and the waiting
futures are cancelled). A broker that comes back gets a new channel and the full state.

Inter-broker requests are sent at v0 without an ApiVersions exchange: brokers of one
build speak the same versions (Kafka's ``inter.broker.protocol.version`` plays this part
once mixed builds exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, NamedTuple

import structlog

from protocol.apis import APIS, ApiKey, Request, decode_response, encode_request
from protocol.errors import MalformedFrameError
from protocol.framing import LENGTH_SIZE, parse_response_header

__all__ = ["BrokerChannel"]

_VERSION = 0
_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
_MAX_RESPONSE_BYTES = 100 * 1024 * 1024


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
        self._timeout_s = request_timeout_ms / 1000
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._correlation = itertools.count(1)
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
        self._disconnect()
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            for attempt in itertools.count():
                if item.future.cancelled():
                    break
                try:
                    response = await asyncio.wait_for(self._exchange(item), self._timeout_s)
                except (OSError, TimeoutError, EOFError, MalformedFrameError) as exc:
                    self._disconnect()
                    delay = _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)]
                    if attempt in (0, 5) or attempt % 50 == 0:
                        self._log.info(
                            "controller.send_retry", api=APIS[item.api_key].name, error=repr(exc)
                        )
                    await asyncio.sleep(delay)
                    continue
                if not item.future.done():
                    item.future.set_result(response)
                break

    async def _exchange(self, item: _Item) -> Any:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        correlation_id = next(self._correlation)
        self._writer.writelines(
            encode_request(item.api_key, _VERSION, correlation_id, item.request)
        )
        await self._writer.drain()
        size = int.from_bytes(await self._reader.readexactly(LENGTH_SIZE), "big")
        if size > _MAX_RESPONSE_BYTES:
            raise MalformedFrameError(f"a {size}-byte response from broker {self.broker_id}")
        payload = memoryview(await self._reader.readexactly(size))
        got, body = parse_response_header(payload)
        if got != correlation_id:
            raise MalformedFrameError(f"correlation id {got}, expected {correlation_id}")
        return decode_response(APIS[item.api_key], _VERSION, body)

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

"""The client's BrokerConnection against a scripted broker: how answers are cut from the
byte stream (one read holding several, one answer over many reads), and what ends it."""

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

import pytest

from client import connection
from client.cluster import Cluster
from client.connection import BrokerConnection
from client.errors import TlsError
from protocol.apis import (
    ApiKey,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
    MetadataTopic,
    decode_request,
    encode_error_response,
    encode_response,
    supported_versions,
)
from protocol.errors import (
    FrameTooLargeError,
    NetworkError,
    NotControllerError,
    RequestTimedOutError,
)
from protocol.framing import LENGTH_SIZE

Reply = Callable[[int, int], bytes]
"""(correlation id, api version) -> the frame bytes to write for a Metadata request."""


def _frame(correlation_id: int, version: int, response: object) -> bytes:
    return b"".join(bytes(p) for p in encode_response(correlation_id, version, response))


async def _broker(
    reply: Callable[[asyncio.StreamWriter, list[bytes]], object],
    answer: MetadataResponse | None = None,
) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A broker that answers ApiVersions itself and hands Metadata frames (of ``answer``,
    else _META) to ``reply``."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        pending: list[bytes] = []
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(LENGTH_SIZE), "big")
                header, api, _ = decode_request(await reader.readexactly(size))
                if api.key == ApiKey.API_VERSIONS:
                    body = ApiVersionsResponse(api_keys=supported_versions())
                    writer.write(_frame(header.correlation_id, 0, body))
                    continue
                response = _META if answer is None else answer
                pending.append(_frame(header.correlation_id, header.api_version, response))
                result = reply(writer, pending)
                if asyncio.iscoroutine(result):
                    await result
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, writers
    finally:
        for writer in writers:
            writer.close()
        server.close()


_META = MetadataResponse(brokers=[], cluster_id="c", controller_id=1, topics=[])


async def test_several_answers_in_one_read_and_one_answer_over_many_reads() -> None:
    async def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        if len(pending) < 3:
            return  # hold the answers: three go out together
        data = b"".join(pending)
        pending.clear()
        writer.write(data[:5])  # the first answer cut inside its length prefix...
        await writer.drain()
        await asyncio.sleep(0.01)
        for i in range(5, len(data), 7):  # ... and the rest dribbled out 7 bytes at a time
            writer.write(data[i : i + 7])
            await writer.drain()

    async for port, _ in _broker(reply):
        async with BrokerConnection("127.0.0.1", port) as conn:
            answers = await asyncio.gather(
                *(conn.request(ApiKey.METADATA, MetadataRequest(topics=[])) for _ in range(3))
            )
            assert [a.cluster_id for a in answers] == ["c", "c", "c"]
            assert conn.connected


async def test_the_pool_lets_go_of_large_answers_buffers_once_none_come(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large answer's buffer is kept for the next ones (no copy) while they come, and let
    go of once a trim period passes without any (it held up to 16 MiB a connection for as
    long as the connection lived)."""
    monkeypatch.setattr(connection, "_FRAME_POOL_TRIM_S", 0.2)
    topics = [MetadataTopic(name=f"{'t' * 200}-{i}") for i in range(2_000)]  # ~420 KB
    big = MetadataResponse(brokers=[], cluster_id="c", controller_id=1, topics=topics)

    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        writer.write(b"".join(pending))
        pending.clear()

    async for port, _ in _broker(reply, big):
        async with BrokerConnection("127.0.0.1", port) as conn:
            for _ in range(3):  # one a trim period for a while: the buffer stays
                answer = await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))
                assert len(answer.topics) == 2_000
                assert conn._pool.held_bytes > 400_000
                await asyncio.sleep(0.12)
            for _ in range(100):  # two periods without a large answer (0.4 s, or later)
                if conn._pool.held_bytes == 0:
                    break
                await asyncio.sleep(0.05)
            assert conn._pool.held_bytes == 0
            assert conn._trimming is None  # nothing left to trim: no timer
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))
            assert conn._trimming is not None
        assert conn._trimming is None  # closed: its timer (and hold on it) gone


async def test_an_answer_over_max_frame_bytes_closes_the_connection_with_why() -> None:
    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        writer.write((10_000).to_bytes(4, "big"))  # announces more than the client takes

    async for port, _ in _broker(reply):
        conn = BrokerConnection("127.0.0.1", port, max_frame_bytes=4_096)
        await conn.connect()
        with pytest.raises(FrameTooLargeError, match="10000 bytes is over the maximum"):
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))
        assert not conn.connected
        await conn.__aexit__()


def _half_then_gone(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
    writer.write(pending[0][:9])  # half an answer, then gone
    writer.close()


async def test_the_broker_closing_mid_answer_fails_what_is_in_flight() -> None:
    async for port, _ in _broker(_half_then_gone):
        async with BrokerConnection("127.0.0.1", port) as conn:
            with pytest.raises(NetworkError, match="closed the connection"):
                await asyncio.wait_for(conn.request(ApiKey.METADATA, MetadataRequest(topics=[])), 5)
            assert not conn.connected
            with pytest.raises(NetworkError, match="closed"):
                await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))


# --- send_now: written at once, answered through a callback --------------------------


class _Answers:
    """What send_now's callbacks were given, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[object, BaseException | None]] = []
        self.arrived = asyncio.Event()

    def __call__(self, response: object, error: BaseException | None) -> None:
        self.got.append((response, error))
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


class _Broken:
    """A callback with a bug: it records the answer, then raises."""

    def __init__(self, answers: _Answers) -> None:
        self.answers = answers

    def __call__(self, response: object, error: BaseException | None) -> None:
        self.answers(response, error)
        raise RuntimeError("a bug in the caller")


async def test_send_now_answers_each_callback_in_order_and_a_failing_callback_ends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        if len(pending) == 3:
            writer.write(b"".join(pending))  # all three in one read

    async for port, _ in _broker(reply):
        async with BrokerConnection("127.0.0.1", port) as conn:
            answers = _Answers()
            broken = _Broken(answers)

            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), broken)
            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
            await answers.wait_for(3)
            assert [(type(r), e) for r, e in answers.got] == [(MetadataResponse, None)] * 3
            assert "the callback of a Metadata request failed" in caplog.text
            assert conn.connected  # the caller's bug ended nobody's connection


async def _send_one(port: int) -> tuple[object, BaseException | None, bool]:
    """One Metadata request by send_now: (response, error, still connected) once answered."""
    async with BrokerConnection("127.0.0.1", port) as conn:
        answers = _Answers()
        conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
        await answers.wait_for(1)
        ((response, error),) = answers.got
        return response, error, conn.connected


async def test_send_now_hands_a_request_level_error_to_the_callback() -> None:
    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        correlation_id = int.from_bytes(pending.pop()[4:8], "big")
        error = NotControllerError("ask the controller")
        writer.write(b"".join(bytes(p) for p in encode_error_response(correlation_id, error)))

    async for port, _ in _broker(reply):
        response, error, connected = await _send_one(port)
        assert response is None and isinstance(error, NotControllerError)
        assert connected


async def test_send_now_without_an_answer_times_out_and_closes_the_connection() -> None:
    async for port, _ in _broker(lambda writer, pending: None):  # never answers
        async with BrokerConnection("127.0.0.1", port, request_timeout_ms=100) as conn:
            answers = _Answers()
            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
            await answers.wait_for(1)
            ((response, error),) = answers.got
            assert response is None and isinstance(error, RequestTimedOutError)
            assert "got no answer within 100 ms" in str(error)
            assert not conn.connected
            with pytest.raises(NetworkError, match="closed"):
                conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)


async def test_send_now_callbacks_hear_of_the_broker_closing() -> None:
    async for port, _ in _broker(_half_then_gone):
        async with BrokerConnection("127.0.0.1", port) as conn:
            answers = _Answers()
            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
            await answers.wait_for(2)
            assert all(r is None and isinstance(e, NetworkError) for r, e in answers.got)


async def test_send_now_an_answer_in_time_stops_its_timer() -> None:
    async for port, _ in _broker(lambda writer, pending: writer.write(pending.pop())):
        async with BrokerConnection("127.0.0.1", port, request_timeout_ms=100) as conn:
            answers = _Answers()
            conn.send_now(ApiKey.METADATA, MetadataRequest(topics=[]), answers)
            await answers.wait_for(1)
            await asyncio.sleep(0.2)  # past the request timeout
            assert conn.connected and len(answers.got) == 1


async def test_send_now_an_answer_to_another_request_fails_the_waiting_one() -> None:
    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        frame = bytearray(pending.pop())
        frame[4:8] = (999).to_bytes(4, "big")  # a correlation id nobody sent
        writer.write(bytes(frame))

    async for port, _ in _broker(reply):
        response, error, connected = await _send_one(port)
        assert response is None and isinstance(error, NetworkError)
        assert "answered correlation id 999" in str(error)
        assert not connected


async def test_a_broker_silent_at_the_handshake_is_passed_over_for_one_that_answers() -> None:
    """Found moving partitions with a broker stopped (SIGSTOP): a request to any broker
    went to it first and failed at its ApiVersions timeout, not on to the next broker."""
    held: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)  # mute
    quiet = silent.sockets[0].getsockname()[1]

    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        writer.write(b"".join(pending))
        pending.clear()

    try:
        async for port, _ in _broker(reply):
            cluster = Cluster(
                [f"127.0.0.1:{quiet}", f"127.0.0.1:{port}"], client_id="t", request_timeout_ms=300
            )
            # the silent one first
            cluster._candidates = functools.partial(list, cluster.bootstrap)  # type: ignore[method-assign]
            try:
                answer = await cluster.send_any(ApiKey.METADATA, MetadataRequest(topics=[]))
            finally:
                await cluster.close()
            assert answer.cluster_id == "c"
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_a_broker_that_drops_the_handshake_is_retriable_with_a_tls_hint() -> None:
    """From a review: a plaintext connection dropped at ApiVersions (a TLS listener, or a
    broker going down) was a TlsError, which is not retried; it is a NetworkError with a
    hint, and only a TLS failure seen as such is a TlsError."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        conn = BrokerConnection("127.0.0.1", port, request_timeout_ms=2000)
        with pytest.raises(NetworkError) as caught:
            await conn.connect()
        conn.close()
        assert not isinstance(caught.value, TlsError) and caught.value.retriable
        assert "connect with security_protocol='SSL'" in str(caught.value)
    finally:
        server.close()
        await server.wait_closed()

"""The client's BrokerConnection against a scripted broker: how answers are cut from the
byte stream (one read holding several, one answer over many reads), and what ends it."""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from client.connection import BrokerConnection
from protocol.apis import (
    ApiKey,
    ApiVersionsResponse,
    MetadataRequest,
    MetadataResponse,
    decode_request,
    encode_response,
    supported_versions,
)
from protocol.errors import FrameTooLargeError, NetworkError
from protocol.framing import LENGTH_SIZE

Reply = Callable[[int, int], bytes]
"""(correlation id, api version) -> the frame bytes to write for a Metadata request."""


def _frame(correlation_id: int, version: int, response: object) -> bytes:
    return b"".join(bytes(p) for p in encode_response(correlation_id, version, response))


async def _broker(
    reply: Callable[[asyncio.StreamWriter, list[bytes]], object],
) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A broker that answers ApiVersions itself and hands Metadata frames to ``reply``."""
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
                pending.append(_frame(header.correlation_id, header.api_version, _META))
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


async def test_the_broker_closing_mid_answer_fails_what_is_in_flight() -> None:
    def reply(writer: asyncio.StreamWriter, pending: list[bytes]) -> None:
        writer.write(pending[0][:9])  # half an answer, then gone
        writer.close()

    async for port, _ in _broker(reply):
        async with BrokerConnection("127.0.0.1", port) as conn:
            with pytest.raises(NetworkError, match="closed the connection"):
                await asyncio.wait_for(conn.request(ApiKey.METADATA, MetadataRequest(topics=[])), 5)
            assert not conn.connected
            with pytest.raises(NetworkError, match="closed"):
                await conn.request(ApiKey.METADATA, MetadataRequest(topics=[]))

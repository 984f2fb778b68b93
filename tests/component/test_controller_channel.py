"""The controller's channel to one broker against a scripted broker: UpdateMetadata at v1
(incremental) to a broker of this build, and at v0, always whole, to one of an older build
that refuses v1 (a rolling upgrade)."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from broker.controller.channel import BrokerChannel
from protocol.apis import (
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    ApiKey,
    LeaderAndIsrRequest,
    LeaderAndIsrResponse,
    UpdateMetadataBroker,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
    UpdateMetadataResponse,
    decode_request,
    encode_error_response,
    encode_response,
)
from protocol.errors import UnsupportedRequestError
from protocol.framing import LENGTH_SIZE

_BROKERS = [UpdateMetadataBroker(id=1, host="127.0.0.1", port=9092)]


def _state(topic: str, partition: int, leader: int = 1) -> UpdateMetadataPartitionState:
    return UpdateMetadataPartitionState(
        topic_name=topic,
        partition_index=partition,
        controller_epoch=1,
        leader=leader,
        leader_epoch=0,
        isr=[leader],
        replicas=[leader],
    )


def _request(kind: int, states: list[UpdateMetadataPartitionState]) -> UpdateMetadataRequest:
    return UpdateMetadataRequest(
        controller_id=1,
        controller_epoch=1,
        type=kind,
        partition_states=states,
        live_brokers=_BROKERS,
    )


class _Broker:
    """Answers UpdateMetadata up to ``max_version`` (LeaderAndIsr up to
    ``leader_and_isr_max``), and refuses later versions as a broker of an older build does
    (UNSUPPORTED_VERSION); keeps what it was sent."""

    def __init__(self, max_version: int, leader_and_isr_max: int = 1) -> None:
        self.max_version = max_version
        self.leader_and_isr_max = leader_and_isr_max
        self.got: list[tuple[int, UpdateMetadataRequest]] = []
        self.roles: list[tuple[int, LeaderAndIsrRequest]] = []
        self.arrived = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(LENGTH_SIZE), "big")
                header, _, request = decode_request(await reader.readexactly(size))
                roles = header.api_key == ApiKey.LEADER_AND_ISR
                assert roles or header.api_key == ApiKey.UPDATE_METADATA
                newest = self.leader_and_isr_max if roles else self.max_version
                if header.api_version > newest:
                    refusal = UnsupportedRequestError(
                        f"{ApiKey(header.api_key).name} v{header.api_version} is not supported"
                    )
                    frame = encode_error_response(header.correlation_id, refusal)
                else:
                    (self.roles if roles else self.got).append((header.api_version, request))
                    self.arrived.set()
                    answer = LeaderAndIsrResponse() if roles else UpdateMetadataResponse()
                    frame = encode_response(header.correlation_id, header.api_version, answer)
                writer.writelines(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass


Opened = tuple[_Broker, BrokerChannel]


@pytest.fixture
async def open_channel() -> AsyncIterator[Callable[..., Awaitable[Opened]]]:
    """``open_channel(max_version, full=...)``: a scripted broker and a channel to it."""
    opened: list[Opened] = []

    async def open_(
        max_version: int,
        full: Callable[[], UpdateMetadataRequest] | None = None,
        leader_and_isr_max: int = 1,
    ) -> Opened:
        broker = _Broker(max_version, leader_and_isr_max)
        port = await broker.start()
        channel = BrokerChannel(
            2,
            "127.0.0.1",
            port,
            full_metadata=full or (lambda: _request(UPDATE_METADATA_FULL, [])),
        )
        opened.append((broker, channel))
        return broker, channel

    yield open_
    for broker, channel in opened:
        await channel.close()
        if broker.server is not None and broker.server.is_serving():
            await broker.stop()


async def _send(channel: BrokerChannel, request: UpdateMetadataRequest) -> Any:
    return await asyncio.wait_for(channel.send(ApiKey.UPDATE_METADATA, request), 10)


async def test_a_broker_of_this_build_gets_only_what_changed(
    open_channel: Callable[..., Awaitable[Opened]],
) -> None:
    broker, channel = await open_channel(max_version=1)
    delta = _request(UPDATE_METADATA_INCREMENTAL, [_state("t", 3)])
    assert (await _send(channel, delta)).error_code == 0
    assert broker.got == [(1, delta)]


async def test_a_broker_of_the_build_before_topic_ids_gets_the_update_without_them(
    open_channel: Callable[..., Awaitable[Opened]],
) -> None:
    broker, channel = await open_channel(max_version=2)
    delta = _request(UPDATE_METADATA_INCREMENTAL, [_state("t", 3)])
    delta.topic_ids = {"t": bytes(range(16))}
    assert (await _send(channel, delta)).error_code == 0
    assert channel.versions[ApiKey.UPDATE_METADATA] == 2
    without = _request(UPDATE_METADATA_INCREMENTAL, [_state("t", 3)])  # v2: no topic_ids
    assert broker.got == [(2, without)]
    newer, again = await open_channel(max_version=3)
    assert (await _send(again, delta)).error_code == 0
    assert newer.got == [(3, delta)]


async def test_a_broker_of_the_build_before_topic_ids_gets_roles_without_them(
    open_channel: Callable[..., Awaitable[Opened]],
) -> None:
    broker, channel = await open_channel(max_version=2, leader_and_isr_max=0)
    roles = LeaderAndIsrRequest(controller_id=1, controller_epoch=1, topic_ids={"t": bytes(16)})
    for _ in range(2):  # refused once, then sent at v0 at once
        answer = await asyncio.wait_for(channel.send(ApiKey.LEADER_AND_ISR, roles), 10)
        assert answer.error_code == 0
    assert channel.versions[ApiKey.LEADER_AND_ISR] == 0
    without = LeaderAndIsrRequest(controller_id=1, controller_epoch=1)
    assert broker.roles == [(0, without), (0, without)]


async def test_a_broker_of_an_older_build_gets_the_whole_picture_at_v0(
    open_channel: Callable[..., Awaitable[Opened]],
) -> None:
    picture = [_state("t", p) for p in range(4)]
    built: list[UpdateMetadataRequest] = []

    def full() -> UpdateMetadataRequest:
        built.append(_request(UPDATE_METADATA_FULL, list(picture)))
        return built[-1]

    broker, channel = await open_channel(max_version=0, full=full)
    delta = _request(UPDATE_METADATA_INCREMENTAL, [_state("t", 3)])
    assert (await _send(channel, delta)).error_code == 0
    # v0 has no type: it decodes as the whole picture, which is what was sent
    assert broker.got == [(0, _request(UPDATE_METADATA_FULL, picture))]
    assert channel.versions[ApiKey.UPDATE_METADATA] == 0

    # the next update goes at v0 at once, built whole when sent (not when queued)
    picture[1] = _state("t", 1, leader=2)
    await _send(channel, _request(UPDATE_METADATA_INCREMENTAL, [_state("t", 1, leader=2)]))
    assert broker.got[1] == (0, _request(UPDATE_METADATA_FULL, picture))
    assert len(built) == 2


async def test_an_older_broker_restarted_as_this_build_gets_v1_again(
    open_channel: Callable[..., Awaitable[Opened]],
) -> None:
    old, channel = await open_channel(max_version=0)
    delta = _request(UPDATE_METADATA_INCREMENTAL, [_state("t", 0)])
    await _send(channel, delta)
    assert channel.versions[ApiKey.UPDATE_METADATA] == 0
    await old.stop()

    new = _Broker(max_version=1)
    await new.start(channel.port)
    await _send(channel, delta)
    assert new.got == [(1, delta)]
    await new.stop()


async def test_drain_waits_until_everything_sent_is_answered(
    open_channel: Callable[..., Awaitable[Opened]],
) -> None:
    """A controller stepping down drains its channels first: what it queued (the leaders
    a controlled shutdown moved) reaches the brokers instead of being dropped."""
    broker, channel = await open_channel(max_version=1)
    await broker.stop()  # down a moment: the channel retries
    sent = [
        channel.send(
            ApiKey.UPDATE_METADATA, _request(UPDATE_METADATA_INCREMENTAL, [_state("t", p)])
        )
        for p in range(3)
    ]
    draining = asyncio.ensure_future(channel.drain())
    await asyncio.sleep(0.2)
    assert not draining.done() and not channel.reachable  # a stopping controller skips it
    back = _Broker(max_version=1)
    await back.start(channel.port)
    await asyncio.wait_for(draining, 10)
    assert all(f.done() for f in sent) and channel.reachable
    assert [r.partition_states[0].partition_index for _, r in back.got] == [0, 1, 2]
    await back.stop()


async def test_every_request_carries_the_broker_epoch_the_channel_is_for() -> None:
    """KIP-380: a channel is one broker registration's; its requests say which, so a later
    run of the broker at the same address refuses them."""
    broker = _Broker(max_version=1)
    port = await broker.start()
    channel = BrokerChannel(2, "127.0.0.1", port, broker_epoch=77)
    try:
        await _send(channel, _request(UPDATE_METADATA_INCREMENTAL, []))
        assert [request.broker_epoch for _, request in broker.got] == [77]
    finally:
        await channel.close()
        await broker.stop()


async def test_closing_the_channel_ends_the_wait_of_a_request_in_flight() -> None:
    """A broker that bounced mid-request: its channel is replaced, and whoever waits for
    that request's answer (a topic deletion's confirmation) is told, not left hanging."""
    read, ended = asyncio.Event(), asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        read.set()
        await reader.read()  # never answers, until the channel closes the connection
        writer.close()
        await writer.wait_closed()
        ended.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    channel = BrokerChannel(2, "127.0.0.1", port)
    try:
        waiting = channel.send(ApiKey.UPDATE_METADATA, _request(UPDATE_METADATA_INCREMENTAL, []))
        await asyncio.wait_for(read.wait(), 10)
        await channel.close()
        assert waiting.cancelled()
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()

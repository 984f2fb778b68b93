"""The broker's listener in-process on port 0, with the client's connection and raw sockets."""

import asyncio
import gc
import os
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from broker.server import BrokerServer, CloseConnection
from broker.zk import ZkError, ZkUnavailable
from client.connection import BrokerConnection
from protocol.apis import (
    APIS,
    ApiKey,
    ApiVersionsResponse,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    MetadataBroker,
    MetadataRequest,
    MetadataResponse,
    ProducePartition,
    ProduceRequest,
    ProduceResponse,
    ProduceTopic,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    supported_versions,
)
from protocol.errors import (
    NetworkError,
    NotControllerError,
    RequestTimedOutError,
    UnknownServerError,
    UnsupportedVersionError,
)
from protocol.framing import FileRegion, FrameDecoder, RequestHeader, parse_response_header


async def metadata(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
    # Requests naming "slow" finish later than those after them: order must still hold.
    if request.topics and request.topics[0].startswith("slow"):
        await asyncio.sleep(0.05)
    if request.topics == ["boom"]:
        raise RuntimeError("a handler bug")
    if request.topics == ["not-controller"]:
        raise NotControllerError("ask broker 2")
    if request.topics == ["zookeeper-gone"]:
        raise ZkUnavailable("ZooKeeper unavailable for /brokers/ids: SessionExpiredError()")
    if request.topics == ["zookeeper-refused"]:
        raise ZkError("ZooKeeper refused an operation on /brokers/ids: NoAuthError()")
    if request.topics == ["cancelled-inside"]:
        raise asyncio.CancelledError  # e.g. a future it awaited was cancelled by someone
    return MetadataResponse(
        brokers=[MetadataBroker(node_id=1, host="h", port=header.correlation_id)],
        cluster_id=(request.topics or ["all"])[0],
    )


async def produce(header: RequestHeader, request: ProduceRequest) -> ProduceResponse | None:
    return None if request.acks == 0 else ProduceResponse()


@pytest.fixture
async def server() -> AsyncIterator[tuple[BrokerServer, int]]:
    srv = BrokerServer(
        {ApiKey.METADATA: metadata, ApiKey.PRODUCE: produce}, max_frame_bytes=64 * 1024
    )
    port = await srv.start()
    yield srv, port
    await srv.stop()


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, memoryview]:
    (size,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
    return parse_response_header(memoryview(await reader.readexactly(size)))


async def test_api_versions_then_requests(server: tuple[BrokerServer, int]) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as conn:
        assert set(conn.versions) == set(APIS)
        assert conn.version_for(ApiKey.METADATA) == APIS[ApiKey.METADATA].max_version
        response = await conn.request(ApiKey.METADATA, MetadataRequest(topics=["orders"]))
        assert response.cluster_id == "orders"


async def test_pipelined_requests_are_answered_in_order(server: tuple[BrokerServer, int]) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as conn:
        names = [f"{'slow' if i % 3 == 0 else 'fast'}-{i}" for i in range(30)]
        results = await asyncio.gather(
            *(conn.request(ApiKey.METADATA, MetadataRequest(topics=[n])) for n in names)
        )
        assert [r.cluster_id for r in results] == names


async def test_a_cancelled_request_does_not_break_the_connection(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port, request_timeout_ms=3000) as conn:
        slow = asyncio.ensure_future(
            conn.request(ApiKey.METADATA, MetadataRequest(topics=["slow"]))
        )
        await asyncio.sleep(0.01)
        slow.cancel()  # its answer still arrives, and must be read past
        response = await conn.request(ApiKey.METADATA, MetadataRequest(topics=["next"]))
        assert response.cluster_id == "next"
        assert conn.connected


async def test_a_connection_tells_since_when_a_request_is_unanswered(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as conn:
        assert conn.waiting_since() is None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        slow = asyncio.ensure_future(
            conn.request(ApiKey.METADATA, MetadataRequest(topics=["slow"]))
        )
        await asyncio.sleep(0.01)  # the handler takes 50 ms
        since = conn.waiting_since()
        assert since is not None and sent <= since <= loop.time()
        await slow
        assert conn.waiting_since() is None


async def test_no_response_for_acks_0_and_the_next_answer_still_matches(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as conn:
        silent = ProduceRequest(acks=0, timeout_ms=100)
        assert await conn.request(ApiKey.PRODUCE, silent, expect_response=False) is None
        loud = await conn.request(ApiKey.PRODUCE, ProduceRequest(acks=1, timeout_ms=100))
        assert isinstance(loud, ProduceResponse)
        assert (
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["x"]))
        ).cluster_id == "x"


async def test_handler_errors_become_error_codes(server: tuple[BrokerServer, int]) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as conn:
        with pytest.raises(NotControllerError, match="ask broker 2"):
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["not-controller"]))
        with pytest.raises(UnknownServerError):
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["boom"]))
        # ZooKeeper out of reach is an outage, not a bug: retriable, and it says so
        with pytest.raises(RequestTimedOutError, match="could not reach ZooKeeper") as caught:
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["zookeeper-gone"]))
        assert caught.value.retriable
        with pytest.raises(UnknownServerError):  # a refusal is not an outage: a bug to see
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["zookeeper-refused"]))
        assert (await conn.request(ApiKey.METADATA, MetadataRequest())).cluster_id == "all"


@pytest.mark.parametrize(("key", "version"), [(3, 99), (99, 0)])
async def test_unsupported_requests_get_an_answer_and_the_connection_stays(
    server: tuple[BrokerServer, int], key: int, version: int
) -> None:
    _, port = server
    reader, writer = await _raw(port)
    header = struct.pack(">HHi", key, version, 41)
    body = msgpack.packb({})
    writer.write(struct.pack(">I", len(header) + len(body)) + header + body)
    cid, payload = await _read_frame(reader)
    assert cid == 41
    assert msgpack.unpackb(bytes(payload))["error_code"] == 35  # UNSUPPORTED_VERSION
    writer.writelines(encode_request(ApiKey.METADATA, 0, 42, MetadataRequest(topics=["ok"])))
    cid, payload = await _read_frame(reader)
    assert cid == 42 and decode_response(APIS[3], 0, payload).cluster_id == "ok"
    writer.close()


async def test_a_known_api_without_a_handler_is_unsupported(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as conn:
        with pytest.raises(UnsupportedVersionError, match="Fetch is not served"):
            await conn.request(ApiKey.FETCH, FetchRequest(max_wait_ms=1, min_bytes=1))
        assert (await conn.request(ApiKey.METADATA, MetadataRequest())).cluster_id == "all"


async def test_api_versions_at_an_unknown_version_lists_what_we_speak(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    reader, writer = await _raw(port)
    header = struct.pack(">HHi", ApiKey.API_VERSIONS, 7, 1)
    writer.write(struct.pack(">I", len(header) + 1) + header + b"\x80")
    _, payload = await _read_frame(reader)
    response = decode_response(APIS[ApiKey.API_VERSIONS], 0, payload)
    assert isinstance(response, ApiVersionsResponse) and response.error_code == 35
    assert {r.api_key for r in response.api_keys} == set(APIS)
    writer.close()


async def test_garbage_body_gets_invalid_request_and_the_connection_stays(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    reader, writer = await _raw(port)
    header = struct.pack(">HHi", ApiKey.METADATA, 0, 7)
    writer.write(struct.pack(">I", len(header) + 3) + header + b"\xc1\xc1\xc1")
    cid, payload = await _read_frame(reader)
    assert cid == 7 and msgpack.unpackb(bytes(payload))["error_code"] == 42  # INVALID_REQUEST
    writer.writelines(encode_request(ApiKey.METADATA, 0, 8, MetadataRequest()))
    assert (await _read_frame(reader))[0] == 8
    writer.close()


@pytest.mark.parametrize(
    "bad", [struct.pack(">I", 10**6), struct.pack(">I", 3) + b"abc"], ids=["oversized", "short"]
)
async def test_broken_framing_closes_only_that_connection(
    server: tuple[BrokerServer, int], bad: bytes
) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port) as bystander:
        reader, writer = await _raw(port)
        writer.write(bad)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the broker
        writer.close()
        response = await bystander.request(ApiKey.METADATA, MetadataRequest(topics=["still"]))
        assert response.cluster_id == "still"


async def test_silent_and_vanishing_clients_do_not_disturb_others(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    silent = [await _raw(port) for _ in range(20)]  # connect and send nothing
    _, vanishing = await _raw(port)
    frame = b"".join(bytes(p) for p in encode_request(ApiKey.METADATA, 0, 1, MetadataRequest()))
    vanishing.write(frame[: len(frame) // 2])  # half a request, then gone
    await vanishing.drain()
    vanishing.close()
    async with BrokerConnection("127.0.0.1", port) as conn:
        assert (
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["a"]))
        ).cluster_id == "a"
    for _, writer in silent:
        writer.close()


async def test_idle_connections_are_closed_after_max_idle() -> None:
    srv = BrokerServer({ApiKey.METADATA: metadata}, max_idle_ms=300)
    port = await srv.start()
    try:
        silent_reader, silent = await _raw(port)
        half_reader, half = await _raw(port)
        frame = b"".join(bytes(p) for p in encode_request(ApiKey.METADATA, 0, 1, MetadataRequest()))
        half.write(frame[:5])  # a request that never finishes
        async with BrokerConnection("127.0.0.1", port) as busy:
            for _ in range(8):  # active for longer than max idle: kept open
                await busy.request(ApiKey.METADATA, MetadataRequest(topics=["x"]))
                await asyncio.sleep(0.1)
            assert await asyncio.wait_for(silent_reader.read(), 5) == b""  # closed by the broker
            assert await asyncio.wait_for(half_reader.read(), 5) == b""
            assert (
                await busy.request(ApiKey.METADATA, MetadataRequest(topics=["y"]))
            ).cluster_id == "y"
        silent.close()
        half.close()
    finally:
        await srv.stop()


async def test_a_wrong_address_is_a_clear_retriable_error() -> None:
    with pytest.raises(
        NetworkError, match=r"cannot connect to broker 127.0.0.1:1 .*--bootstrap-server"
    ) as info:
        await BrokerConnection("127.0.0.1", 1).connect(timeout_s=2)
    assert info.value.retriable


async def test_stop_answers_requests_in_flight_first() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def held(header: RequestHeader, request: MetadataRequest) -> MetadataResponse:
        started.set()
        await release.wait()
        return MetadataResponse(cluster_id="answered")

    srv = BrokerServer({ApiKey.METADATA: held})
    port = await srv.start()
    conn = BrokerConnection("127.0.0.1", port)
    await conn.connect()
    pending = asyncio.ensure_future(conn.request(ApiKey.METADATA, MetadataRequest()))
    await started.wait()  # the request is at the broker, its handler is running
    stopping = asyncio.ensure_future(srv.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # stop waits for the answer...
    release.set()
    await stopping
    assert (await pending).cluster_id == "answered"  # ...which the client gets
    with pytest.raises(NetworkError):
        await conn.request(ApiKey.METADATA, MetadataRequest())
    conn.close()


def test_frame_decoder_matches_what_the_server_reads() -> None:
    # the client's frames are what the server's decoder expects (one shared definition)
    frame = b"".join(bytes(p) for p in encode_request(ApiKey.METADATA, 0, 5, MetadataRequest()))
    (payload,) = FrameDecoder().feed(frame)
    assert struct.unpack_from(">HHi", payload) == (3, 0, 5)


class _ClosableRegion(FileRegion):
    """A region whose file a test can 'close' under the writer (as a deleted segment)."""

    __slots__ = ("closed",)

    def __init__(self, fd: int, position: int, size: int) -> None:
        super().__init__(fd, position, size)
        self.closed = False

    @property
    def fd(self) -> int:
        return -1 if self.closed else self._fd


@pytest.fixture
def segment_file(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(24 * 1024 * 1024)  # larger than any socket buffer: sendfile must wait
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


async def test_fetch_bytes_are_sent_from_the_file(segment_file: tuple[int, bytes]) -> None:
    fd, data = segment_file
    regions: list[_ClosableRegion] = []

    async def fetch(header: RequestHeader, request: FetchRequest) -> FetchResponse:
        region = _ClosableRegion(fd, 1000, len(data) - 2000)
        regions.append(region)
        part = FetchPartitionData(partition_index=0, records=region)
        return FetchResponse(topics=[FetchTopicResponse(topic="t", partitions=[part])])

    srv = BrokerServer({ApiKey.FETCH: fetch})
    port = await srv.start()
    try:
        async with BrokerConnection("127.0.0.1", port) as conn:
            request = FetchRequest(max_wait_ms=0, min_bytes=0)
            # two pipelined: the second's header must not overtake the first's file bytes
            first, second = await asyncio.gather(
                conn.request(ApiKey.FETCH, request), conn.request(ApiKey.FETCH, request)
            )
            for response in (first, second):
                assert bytes(response.topics[0].partitions[0].records) == data[1000:-1000]
        # a file closed mid-send closes that connection only: the frame cannot be finished
        reader, writer = await _raw(port)
        writer.writelines(encode_request(ApiKey.FETCH, 0, 1, request))
        await reader.readexactly(1024)  # the transfer has begun (the rest waits for us)
        regions[-1].closed = True
        with pytest.raises(asyncio.IncompleteReadError):
            while True:
                await asyncio.wait_for(reader.readexactly(1 << 20), 5)
        writer.close()
        async with BrokerConnection("127.0.0.1", port) as conn:
            again = await conn.request(ApiKey.FETCH, request)
            assert len(again.topics[0].partitions[0].records) == len(data) - 2000
    finally:
        await srv.stop()


async def test_a_handler_can_close_its_connection_after_earlier_answers() -> None:
    async def produce(header: RequestHeader, request: ProduceRequest) -> ProduceResponse | None:
        if request.acks == 0:
            raise CloseConnection("acks=0 write failed")
        return ProduceResponse()

    srv = BrokerServer({ApiKey.METADATA: metadata, ApiKey.PRODUCE: produce})
    port = await srv.start()
    try:
        reader, writer = await _raw(port)
        for correlation_id, acks in ((1, 1), (2, 0), (3, 1)):
            request = ProduceRequest(acks=acks, timeout_ms=100)
            writer.writelines(encode_request(ApiKey.PRODUCE, 0, correlation_id, request))
        correlation_id, _ = await _read_frame(reader)
        assert correlation_id == 1  # the answer before it still arrives...
        assert await asyncio.wait_for(reader.read(), 5) == b""  # ...then the connection ends
        writer.close()
        async with BrokerConnection("127.0.0.1", port) as conn:  # others are unaffected
            assert (
                await conn.request(ApiKey.METADATA, MetadataRequest(topics=["ok"]))
            ).cluster_id == "ok"
    finally:
        await srv.stop()


async def test_a_peer_that_stops_reading_times_out_instead_of_hanging() -> None:
    """The request timeout covers the write too: a stalled broker cannot hold drain()."""
    stalled = asyncio.Event()

    async def answer_versions_then_stall(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        header, _, _ = decode_request(await reader.readexactly(size))
        writer.writelines(
            encode_response(
                header.correlation_id, 0, ApiVersionsResponse(api_keys=supported_versions())
            )
        )
        await stalled.wait()  # never reads again
        writer.transport.abort()
        done.set()

    done = asyncio.Event()
    srv = await asyncio.start_server(answer_versions_then_stall, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        conn = BrokerConnection("127.0.0.1", port, request_timeout_ms=500)
        await conn.connect()
        big = ProduceRequest(acks=1, timeout_ms=100, topics=[])
        huge = ProduceRequest(
            acks=1,
            timeout_ms=100,
            topics=[
                ProduceTopic(
                    name="t", partitions=[ProducePartition(index=0, records=bytes(64 << 20))]
                )
            ],
        )
        started = asyncio.get_running_loop().time()
        with pytest.raises(RequestTimedOutError):
            await conn.request(ApiKey.PRODUCE, huge)
        assert asyncio.get_running_loop().time() - started < 5
        with pytest.raises(NetworkError):  # the connection is given up, not left half-written
            await conn.request(ApiKey.PRODUCE, big)
        conn.close()
    finally:
        stalled.set()
        await asyncio.wait_for(done.wait(), 5)
        srv.close()
        await srv.wait_closed()


async def test_connections_sharing_the_read_buffer_keep_their_own_frames(
    server: tuple[BrokerServer, int],
) -> None:
    """Every connection reads into the server's one buffer: frames cut across reads, on
    many connections at once, must each reach their own connection intact."""
    _, port = server
    clients = [await _raw(port) for _ in range(8)]
    frames = []
    for i in range(len(clients)):
        parts = encode_request(
            ApiKey.METADATA, 0, 100 + i, MetadataRequest(topics=[f"topic-{i}-" + "x" * 300])
        )
        frames.append(b"".join(bytes(p) for p in parts))
    for offset in range(0, max(len(f) for f in frames), 7):  # 7-byte pieces, interleaved
        for (_, writer), frame in zip(clients, frames, strict=True):
            if offset < len(frame):
                writer.write(frame[offset : offset + 7])
                await writer.drain()
        await asyncio.sleep(0)
    for i, (reader, writer) in enumerate(clients):
        correlation_id, body = await _read_frame(reader)
        response = decode_response(APIS[ApiKey.METADATA], 0, body)
        assert (correlation_id, response.cluster_id) == (100 + i, f"topic-{i}-" + "x" * 300)
        writer.close()


async def test_a_handler_cancelled_inside_is_an_error_answer_not_a_stuck_connection(
    server: tuple[BrokerServer, int],
) -> None:
    _, port = server
    async with BrokerConnection("127.0.0.1", port, request_timeout_ms=3000) as conn:
        with pytest.raises(UnknownServerError):
            await conn.request(ApiKey.METADATA, MetadataRequest(topics=["cancelled-inside"]))
        after = await conn.request(ApiKey.METADATA, MetadataRequest(topics=["after"]))
        assert after.cluster_id == "after" and conn.connected


async def test_with_one_request_in_flight_reading_pauses_and_resumes() -> None:
    srv = BrokerServer({ApiKey.METADATA: metadata}, max_in_flight=1)
    port = await srv.start()
    try:
        async with BrokerConnection("127.0.0.1", port, request_timeout_ms=5000) as conn:
            names = [f"slow-{i}" for i in range(5)]  # each holds the only slot a while
            results = await asyncio.gather(
                *(conn.request(ApiKey.METADATA, MetadataRequest(topics=[n])) for n in names)
            )
            assert [r.cluster_id for r in results] == names
    finally:
        await srv.stop()


async def test_requests_read_with_one_that_closes_the_connection_are_not_acted_on() -> None:
    """An acks=0 produce that fails closes the connection (its producer must notice): the
    produces pipelined behind it in the same read are not written, as none is answered."""
    written: list[int] = []

    def produce(header: RequestHeader, request: ProduceRequest) -> ProduceResponse | None:
        if request.timeout_ms == 666:
            raise CloseConnection("acks=0 write failed")
        written.append(header.correlation_id)
        return None if request.acks == 0 else ProduceResponse()

    srv = BrokerServer({ApiKey.PRODUCE: produce})
    port = await srv.start()
    try:
        reader, writer = await _raw(port)
        frames = [
            encode_request(ApiKey.PRODUCE, 0, cid, ProduceRequest(acks=acks, timeout_ms=timeout))
            for cid, acks, timeout in ((1, 1, 100), (2, 0, 666), (3, 1, 100), (4, 0, 100))
        ]
        writer.write(b"".join(bytes(p) for parts in frames for p in parts))  # one write
        correlation_id, _ = await _read_frame(reader)
        assert correlation_id == 1
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert written == [1]  # 3 and 4 came with the closing request: not acted on
        writer.close()
    finally:
        await srv.stop()


def _records_to_t0(records: bytes) -> ProduceRequest:
    """An acks=1 Produce of ``records`` to partition 0 of topic t."""
    partition = ProducePartition(index=0, records=records)
    return ProduceRequest(
        acks=1, timeout_ms=1000, topics=[ProduceTopic(name="t", partitions=[partition])]
    )


async def test_large_frames_read_into_pooled_buffers_stay_whole_while_held() -> None:
    """Frames over 64 KiB are read straight into buffers of their own, reused once nothing
    refers to them: records a handler keeps a view of (as a write waiting its turn would)
    must not change when later requests arrive, and big answers reach the client whole,
    pipelined, while it holds the earlier ones."""
    kept: list[tuple[memoryview, bytes]] = []
    sent = [os.urandom(300_000 + 4_096 * i) for i in range(8)]

    async def keep(header: RequestHeader, request: ProduceRequest) -> ProduceResponse:
        records = request.topics[0].partitions[0].records
        assert isinstance(records, memoryview)
        kept.append((records, bytes(records)))  # the view, and what it held on arrival
        await asyncio.sleep(0.01 * (header.correlation_id % 3))  # later ones overtake it
        return ProduceResponse()

    async def fetch(header: RequestHeader, request: FetchRequest) -> FetchResponse:
        part = FetchPartitionData(partition_index=0, records=sent[header.correlation_id % 8])
        return FetchResponse(topics=[FetchTopicResponse(topic="t", partitions=[part])])

    srv = BrokerServer({ApiKey.PRODUCE: keep, ApiKey.FETCH: fetch})
    port = await srv.start()
    try:
        async with BrokerConnection("127.0.0.1", port) as conn:
            for _ in range(2):
                await asyncio.gather(
                    *(conn.request(ApiKey.PRODUCE, _records_to_t0(data)) for data in sent)
                )
            fetched = []
            for _ in range(3):
                fetched += await asyncio.gather(
                    *(
                        conn.request(ApiKey.FETCH, FetchRequest(max_wait_ms=0, min_bytes=0))
                        for _ in range(8)
                    )
                )
        assert sorted(bytes(view) for view, _ in kept) == sorted(sent * 2)
        assert all(view == arrived for view, arrived in kept)
        for response in fetched:
            assert bytes(response.topics[0].partitions[0].records) in sent
        assert 0 < srv.frame_pool.held_bytes <= 64 << 20
    finally:
        await srv.stop()


async def _until(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_length_prefix_alone_does_not_make_the_broker_allocate_the_frame() -> None:
    """Any peer, before authenticating, sends 4 bytes declaring a 60 MiB frame and nothing
    more: the broker holds 4 bytes for it, not 60 MiB (review 94)."""
    srv = BrokerServer({ApiKey.PRODUCE: produce})
    port = await srv.start()
    try:
        _, writer = await _raw(port)
        writer.write(struct.pack(">I", 60 << 20))
        await writer.drain()
        await _until(
            lambda: any(c._decoder.buffered_bytes == 4 for c in srv.connections),
            "the prefix to be read",
        )
        assert srv.frame_pool.held_bytes == 0
        writer.close()
    finally:
        await srv.stop()


async def test_a_connection_lost_inside_a_pooled_frame_gives_its_buffer_back() -> None:
    """A peer gone 100 KB into a 1 MiB frame read into a pooled buffer: the buffer is free
    for others at once, not when the collector frees the connection (the broker freezes
    long-lived objects out of it; gc is off here to stand for that; review 94)."""
    srv = BrokerServer({ApiKey.PRODUCE: produce})
    port = await srv.start()
    gc.disable()
    try:
        frame_ = b"".join(
            bytes(p)
            for p in encode_request(ApiKey.PRODUCE, 0, 1, _records_to_t0(os.urandom(1 << 20)))
        )
        reader, writer = await _raw(port)
        writer.write(frame_)  # assembled as it came, then kept by the pool
        await _read_frame(reader)
        assert srv.frame_pool.held_bytes == len(frame_)
        writer.write(frame_[:100_000])  # the next one goes to that buffer
        await writer.drain()
        await _until(
            lambda: any(c._decoder.read_into() is not None for c in srv.connections),
            "the frame to be read into its own buffer",
        )
        assert srv.frame_pool.take(len(frame_)) is None  # lent
        writer.close()
        await _until(lambda: not srv.connections, "the broker to see the close")
        assert srv.frame_pool.take(len(frame_)) is not None
        assert srv.frame_pool.held_bytes == len(frame_)
    finally:
        gc.enable()
        await srv.stop()

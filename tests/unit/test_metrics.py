"""The Prometheus text format, and the endpoint answering only GET /metrics."""

import asyncio

from broker.metrics import Counter, MetricsServer, gauge, render


def test_render_writes_help_and_type_once_and_escapes_labels() -> None:
    requests = Counter("test_requests_total", "Requests.")
    requests.inc(3)
    size = gauge("test_size_bytes", "Bytes.")
    text = render(
        [
            (requests.name, {}, requests.value),
            (size, {"topic": 'a"b', "partition": "0"}, 10),
            (size, {"topic": "c", "partition": "1"}, 2.5),
        ]
    )
    assert text.splitlines() == [
        "# HELP test_requests_total Requests.",
        "# TYPE test_requests_total counter",
        "test_requests_total 3",
        "# HELP test_size_bytes Bytes.",
        "# TYPE test_size_bytes gauge",
        'test_size_bytes{partition="0",topic="a\\"b"} 10',
        'test_size_bytes{partition="1",topic="c"} 2.5',
    ]


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    writer.write_eof()  # a half-sent request ends here
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_the_endpoint_serves_metrics_and_refuses_the_rest() -> None:
    count = gauge("test_things", "Things.")
    server = MetricsServer(lambda: [(count, {}, 7)])
    port = await server.start("127.0.0.1", 0)
    try:
        ok = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.0 200 OK")
        assert ok.endswith(b"test_things 7\n")
        assert (await _get(port, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.0 404")
        assert await _get(port, b"garbage without an end") == b""  # closed, nothing sent
    finally:
        await server.stop()

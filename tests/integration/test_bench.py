"""`headwater bench` against one real broker, as a user runs it (`--json`): every test
finishes, its counts add up and its figures are sane. Speeds are never asserted."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Cluster

_HEADWATER = Path(sys.executable).with_name("headwater")
COMMAND = [str(_HEADWATER)] if _HEADWATER.exists() else [sys.executable, "-m", "client.cli"]


def bench(cluster: Cluster, *args: str) -> tuple[dict[str, Any], str]:
    """The JSON object of `headwater bench ARGS --json`, and what went to stderr."""
    done = subprocess.run(
        [*COMMAND, "bench", *args, "--json", "--bootstrap-server", cluster.bootstrap],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # one JSON object, nothing else
    return json.loads(lines[0]), done.stderr


def sane(result: dict[str, Any], test: str, records: int, *, latency: bool = True) -> None:
    assert result["test"] == test
    assert result["records"] == records and result["failed"] == 0
    assert result["first_error"] is None
    assert result["elapsed_s"] > 0 and result["records_per_s"] > 0 and result["mb_per_s"] > 0
    if result["settings"].get("payload_file") is None:  # (else the file's sizes)
        assert result["bytes"] >= records * result["settings"]["record_size"]
    lat = result["latency_ms"]
    if not latency:
        assert lat is None
        return
    assert 0 < lat["samples"] <= records
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert lat["avg"] <= lat["max"]


def test_every_bench_against_one_broker(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(1)

    produced, _ = bench(cluster, "produce", "--num-records", "2000", "--topic", "filled")
    sane(produced, "produce", 2000)
    assert produced["bytes"] == 2000 * 100
    assert produced["latency_ms"]["samples"] == 2000  # a short run samples every record
    assert produced["settings"]["num_records"] == 2000 and produced["settings"]["acks"] == "1"
    assert produced["notes"] == []  # created, with the default partitions and RF

    consumed, _ = bench(
        cluster, "consume", "--num-records", "2000", "--topic", "filled", "--print-metrics"
    )
    sane(consumed, "consume", 2000, latency=False)
    assert consumed["bytes"] == 2000 * 100
    ((client, fetching),) = [(m["client"], m["metrics"]) for m in consumed["metrics"]]
    assert client == "consumer"
    assert fetching["consumer-fetch-manager-metrics"]["records-consumed-total"] == 2000
    assert fetching["consumer-fetch-manager-metrics.filled[0]"]["records-lag"] is not None
    assert not any("pre-filled" in note for note in consumed["notes"])

    # a fresh topic is empty: the command fills it first and says so
    fresh, _ = bench(cluster, "consume", "--num-records", "1500", "--partitions", "2")
    sane(fresh, "consume", 1500, latency=False)
    assert any("pre-filled" in note and "1,500 records" in note for note in fresh["notes"])

    e2e, _ = bench(cluster, "e2e", "--throughput", "500", "--num-records", "500")
    sane(e2e, "e2e", 500)
    assert e2e["latency_ms"]["samples"] == 500  # the probe record sent first is not counted
    assert any("probe" in note for note in e2e["notes"])
    assert e2e["elapsed_s"] >= 0.9  # paced: 500 records at 500/s take about a second

    broker, _ = bench(cluster, "broker", "--num-records", "30000", "--batch-size", "65536")
    per_batch = broker["records"] // broker["batches"]
    assert broker["records"] == broker["batches"] * per_batch >= 30000
    sane(broker, "broker", broker["records"])
    assert broker["batches_per_s"] > 0 and broker["latency_ms"]["samples"] == broker["batches"]
    assert 60000 < broker["bytes"] / broker["batches"] <= 65536

    # several producer processes: their results merged into one
    merged, _ = bench(
        cluster,
        *("produce", "--num-records", "3000", "--producers", "2", "--acks", "all"),
        "--print-metrics",
    )
    sane(merged, "produce", 3000)
    assert merged["latency_ms"]["samples"] == 3000
    assert merged["settings"]["producers"] == 2
    sent = {m["client"]: m["metrics"]["producer-metrics"] for m in merged["metrics"]}
    assert sorted(sent) == ["producer 1", "producer 2"]
    assert sum(m["record-send-total"] for m in sent.values()) == 3000
    assert all(m["record-error-total"] == 0 for m in sent.values())
    assert produced["metrics"] is None  # not asked for

    # values from a file (Kafka's --payload-file): its lines, read back as sent
    payload_file = tmp_path / "events.jsonl"
    lines = [b'{"event":"click","user":%d}' % i + b" " * (i * 13) for i in range(12)]
    payload_file.write_bytes(b"\n".join(lines) + b"\n")
    from_file, _ = bench(
        cluster,
        *("produce", "--num-records", "600", "--topic", "from-file"),
        *("--payload-file", str(payload_file)),
    )
    sane(from_file, "produce", 600)
    assert 600 * len(lines[0]) < from_file["bytes"] < 600 * len(lines[-1])
    assert from_file["settings"]["payload_file"] == str(payload_file)
    read_back, _ = bench(cluster, "consume", "--num-records", "600", "--topic", "from-file")
    assert read_back["records"] == 600 and read_back["bytes"] == from_file["bytes"]

    # send_batch(): every record acknowledged, one latency sample per batch
    batched, _ = bench(
        cluster, "produce", "--num-records", "5000", "--send-batch", "--partitions", "2"
    )
    sane(batched, "produce", 5000)
    assert batched["settings"]["send_batch"] is True
    assert 2 <= batched["latency_ms"]["samples"] <= 5000 // 50  # one a batch, not a record
    assert any("send_batch" in note for note in batched["notes"])

    # transactions (Kafka's --transactional-id), two processes, each its own id: every
    # record committed, then read back whole by a read_committed consumer
    transacted, _ = bench(
        cluster,
        "produce",
        "--num-records",
        "3000",
        "--producers",
        "2",
        "--acks",
        "all",
        "--transactional-id",
        "bench",
        "--transaction-duration-ms",
        "20",
        "--topic",
        "transacted",
    )
    sane(transacted, "produce", 3000)
    assert transacted["settings"]["transactional_id"] == "bench"
    read, _ = bench(cluster, "consume", "--num-records", "3000", "--topic", "transacted")
    sane(read, "consume", 3000, latency=False)

    # fresh topics are deleted again; a named one stays
    listed = subprocess.run(
        [*COMMAND, "topics", "list", "--bootstrap-server", cluster.bootstrap],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert "filled" in listed
    assert not [t for t in listed if t.startswith("headwater-bench-")]

"""SSL listeners on real brokers, with a throwaway CA (trustme): clients over TLS while the
brokers replicate over a plaintext listener, a cluster whose brokers also reach each other
over TLS with client certificates required (mutual TLS), and what a client that gets TLS
wrong is told. What a user checks: acked records read back at their offsets, over TLS."""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from client import Admin, Consumer, NewTopic, Producer, TlsError, TopicPartition, create_ssl_context
from client.localcluster import BrokerStartError
from protocol.apis import ApiKey, FindCoordinatorRequest
from protocol.errors import NetworkError
from tests.integration.conftest import Cluster
from tests.integration.conftest import until as _until
from tests.integration.test_cli import COMMAND

pytestmark = pytest.mark.timeout(120)


_BROKER_UNIT = "broker"
"""The brokers' certificates' subject: a new one must keep it (and their names)."""


def _broker_cert(ca: trustme.CA, path: Path, *names: str, unit: str = _BROKER_UNIT) -> None:
    ca.issue_cert(
        *(names or ("127.0.0.1", "localhost")), organization_unit_name=unit
    ).private_key_and_cert_chain_pem.write_to_path(str(path))


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    """PEM files: the CA, a broker's certificate and key (for 127.0.0.1), a client's."""
    files = {"ca": tmp_path / "ca.pem", "broker": tmp_path / "broker.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.issue_cert(
        "127.0.0.1", "localhost", organization_unit_name=_BROKER_UNIT
    ).private_key_and_cert_chain_pem.write_to_path(str(files["broker"]))
    files["client"] = tmp_path / "client.pem"
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
        str(files["client"])
    )
    return {name: str(path) for name, path in files.items()}


def _alter(
    bootstrap: str, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`headwater broker-configs --alter ARGS` (with ``config`` as --command-config)."""
    head = [*COMMAND, "--bootstrap-server", bootstrap]
    if config is not None:
        head += ["--command-config", str(config)]
    return subprocess.run(
        [*head, "broker-configs", "--alter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _bundle(target: Path, *pem_files: Path) -> Path:
    """One PEM file of the certificates in ``pem_files`` (a truststore of several CAs)."""
    target.write_bytes(b"".join(f.read_bytes() for f in pem_files))
    return target


def _ssl_bootstrap(cluster: Cluster) -> str:
    return ",".join(f"127.0.0.1:{b.ports['SSL']}" for b in cluster.brokers.values())


async def _round_trip(bootstrap: str, context: ssl.SSLContext, topic: str) -> None:
    """A replicated topic made, 300 records of 2 KB written with acks=all and read back
    (fetches large enough to go by the TLS copy path, not inlined), all over TLS."""
    values = [b"%04d" % i + b"x" * 2000 for i in range(300)]
    ssl_ports = {int(a.split(":")[1]) for a in bootstrap.split(",")}
    tls = {"security_protocol": "SSL", "ssl_context": context}
    async with Admin(bootstrap_servers=bootstrap, **tls) as admin:
        await admin.create_topics([NewTopic(topic, 1, 3, {"min.insync.replicas": "2"})])
        described = await admin.describe_cluster()
        assert {b.port for b in described.brokers} == ssl_ports  # the listener asked on
    async with Producer(bootstrap_servers=bootstrap, acks="all", **tls) as producer:
        offsets = [(await producer.send_and_wait(topic, v)).offset for v in values]
    assert offsets == list(range(len(values)))
    consumer = Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", **tls)
    got: list[bytes] = []
    async with consumer:
        consumer.assign([TopicPartition(topic, 0)])
        while len(got) < len(values):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(r.value for r in records)
    assert got == values
    # a group: its coordinator is found, and reached, on the listener asked (TLS)
    member = Consumer(
        topic, bootstrap_servers=bootstrap, group_id="g", auto_offset_reset="earliest", **tls
    )
    async with member:
        taken = 0
        while taken < len(values):
            taken += sum(len(r) for r in (await member.getmany(timeout_ms=1000)).values())
        await member.commit()
        assert await member.committed(TopicPartition(topic, 0)) == len(values)
    async with Admin(bootstrap_servers=bootstrap, **tls) as admin:  # as Kafka's clients read it
        found = await admin._cluster.send_any(
            ApiKey.FIND_COORDINATOR, FindCoordinatorRequest(key="g")
        )
        assert found.port in ssl_ports, found


async def test_clients_over_tls_while_brokers_replicate_in_plaintext(
    make_cluster: Callable[..., Cluster], pki: dict[str, str]
) -> None:
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.location": pki["broker"],
    }
    cluster = make_cluster(3, settings)
    context = create_ssl_context(cafile=pki["ca"])
    await _round_trip(_ssl_bootstrap(cluster), context, "secured")
    ssl_port = next(iter(cluster.brokers.values())).ports["SSL"]
    plain = Admin(bootstrap_servers=f"127.0.0.1:{ssl_port}", request_timeout_ms=3000)
    with pytest.raises(NetworkError, match=r"security_protocol='SSL'"):
        await plain.start()
    await plain.close()
    untrusted = Admin(
        bootstrap_servers=f"127.0.0.1:{ssl_port}",
        security_protocol="SSL",
        ssl_context=create_ssl_context(),  # the system's CAs: not ours
    )
    with pytest.raises(TlsError, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusted.start()
    await untrusted.close()
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:  # PLAINTEXT still
        assert "secured" in await admin.list_topics()
    # the command, as Kafka's tools: --command-config with Kafka's client properties
    props = Path(pki["ca"]).with_name("client.properties")
    props.write_text(f"security.protocol=SSL\nssl.truststore.location={pki['ca']}\n")
    tls_args = ["--bootstrap-server", _ssl_bootstrap(cluster), "--command-config", str(props)]
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60)
    listed = run([*COMMAND, *tls_args, "topics", "list"])
    assert listed.returncode == 0 and "secured" in listed.stdout.split(), listed
    assert run([*COMMAND, *tls_args, "produce", "secured"], input="a\nb\n").returncode == 0
    read = run(
        [
            *COMMAND,
            *tls_args,
            "consume",
            "secured",
            "--partition",
            "0",
            "--offset",
            "300",
            "--max-messages",
            "2",
            "--timeout-ms",
            "10000",
        ]
    )
    assert read.stdout.splitlines() == ["a", "b"], read
    for test in ("produce", "broker"):  # the bench's clients, and its raw connections
        bench = run([*COMMAND, *tls_args, "bench", test, "--num-records", "3000", "--json"])
        assert bench.returncode == 0, bench
        assert json.loads(bench.stdout)["records"] >= 3000, bench.stdout
    plain = run([*COMMAND, "--bootstrap-server", _ssl_bootstrap(cluster), "topics", "list"])
    assert plain.returncode == 1 and "security_protocol='SSL'" in plain.stderr, plain
    assert plain.stderr.count("\n") == 1  # one line, no traceback


async def test_brokers_reach_each_other_over_mutual_tls(
    make_cluster: Callable[..., Cluster], pki: dict[str, str]
) -> None:
    """Only an SSL listener, client certificates required: replication, the controller's
    requests and the clients all go over TLS, each side checking the other's."""
    settings = {
        "listeners": "SSL://127.0.0.1:0",
        "ssl.keystore.location": pki["broker"],
        "ssl.truststore.location": pki["ca"],
        "ssl.client.auth": "required",
    }
    cluster = make_cluster(3, settings)
    context = create_ssl_context(cafile=pki["ca"], certfile=pki["client"])
    await _round_trip(_ssl_bootstrap(cluster), context, "mutual")
    anonymous = Admin(
        bootstrap_servers=_ssl_bootstrap(cluster),
        security_protocol="SSL",
        ssl_context=create_ssl_context(cafile=pki["ca"]),
        request_timeout_ms=3000,
    )
    with pytest.raises(NetworkError, match="requires client certificates"):
        await anonymous.start()
    await anonymous.close()

    async def in_sync() -> list[int]:
        async with Admin(
            bootstrap_servers=_ssl_bootstrap(cluster), security_protocol="SSL", ssl_context=context
        ) as admin:
            (topic,) = await admin.describe_topics(["mutual"])
            return topic.partitions[0].isr

    assert sorted(await _until(in_sync, lambda isr: len(isr) == 3)) == [1, 2, 3]

    # a truststore without the CA the others' certificates come from would cut broker 1
    # off from them: refused (Kafka's check), and the brokers go on trusting each other
    other = trustme.CA()
    other_ca = Path(pki["ca"]).with_name("unrelated-ca.pem")
    other.cert_pem.write_to_path(str(other_ca))
    properties = Path(pki["ca"]).with_name("admin.properties")
    properties.write_text(
        f"security.protocol=SSL\nssl.truststore.location={pki['ca']}\n"
        f"ssl.keystore.location={pki['client']}\n"
    )
    alter = functools.partial(_alter, _ssl_bootstrap(cluster), config=properties)
    refused = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.truststore.location={other_ca}"
    )
    assert refused.returncode == 1 and "inter-broker listener would fail" in refused.stderr, refused
    # both CAs (the first step of rotating to the new one): taken, and nothing breaks
    both = _bundle(Path(pki["ca"]).with_name("both-cas.pem"), Path(pki["ca"]), other_ca)
    taken = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.truststore.location={both}"
    )
    assert taken.returncode == 0, taken
    # rotated in place to the unrelated CA alone, the same path named again: checked
    # against the files in use (not the ones now at the path), refused
    rotated = both.read_bytes()
    _bundle(both, other_ca)
    refused = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.truststore.location={both}"
    )
    assert refused.returncode == 1 and "inter-broker listener would fail" in refused.stderr, refused
    both.write_bytes(rotated)
    await _round_trip(_ssl_bootstrap(cluster), context, "mutual-after")


async def test_brokers_may_differ_in_their_inter_broker_listener_while_it_changes(
    make_cluster: Callable[..., Cluster], pki: dict[str, str]
) -> None:
    """From a review: a broker reached its peers on the listener *they* registered for
    inter-broker traffic, with TLS or not by its *own* setting, so a rolling change from
    plaintext to TLS between brokers broke replication half way. As Kafka, each broker
    reaches the others on its own listener's name: here broker 1 has moved to SSL, 2 and
    3 not yet, and replication and the controller work both ways."""
    both = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "ssl.keystore.location": pki["broker"],
        "ssl.truststore.location": pki["ca"],
    }
    cluster = make_cluster(0)
    cluster.start_broker(1, {**both, "inter.broker.listener.name": "SSL"})
    for broker_id in (2, 3):
        cluster.start_broker(broker_id, {**both, "inter.broker.listener.name": "PLAINTEXT"})
    async with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        await _until(admin.describe_cluster, lambda c: len(c.brokers) == 3)
        await admin.create_topics([NewTopic("rolling", 3, 3, {"min.insync.replicas": "3"})])
        async with Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            for i in range(60):
                await producer.send_and_wait("rolling", b"%d" % i, partition=i % 3)
        (topic,) = await admin.describe_topics(["rolling"])
        assert all(sorted(p.isr) == [1, 2, 3] for p in topic.partitions), topic


def _served(port: int, ca: str) -> bytes:
    """The certificate a new TLS connection to ``port`` is shown (DER)."""
    context = create_ssl_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as secure,
    ):
        der = secure.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(pem_file: str) -> bytes:
    """The first certificate in a PEM file (the leaf: after the key, before the chain)."""
    text = Path(pem_file).read_text()
    begin = text.index("-----BEGIN CERTIFICATE-----")
    end = text.index("-----END CERTIFICATE-----", begin) + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[begin:end])


async def test_a_brokers_certificate_is_replaced_without_a_restart(
    make_cluster: Callable[..., Cluster], ca: trustme.CA, pki: dict[str, str], tmp_path: Path
) -> None:
    """Kafka's dynamic ssl.keystore.location: a new keystore for broker 1 is checked,
    then shown from the next handshake on (a new path, or the same path holding a new
    file); a bad one is refused and the old one stays; only a broker may have its own;
    a restarted broker shows the dynamic one; clients go on over TLS throughout."""
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.location": pki["broker"],
    }
    cluster = make_cluster(1, settings)
    port = cluster.brokers[1].ports["SSL"]
    served = functools.partial(_served, ca=pki["ca"])
    assert await asyncio.to_thread(served, port) == _der(pki["broker"])
    rotated = tmp_path / "rotated.pem"
    _broker_cert(ca, rotated)
    bootstrap = cluster.bootstrap

    alter = functools.partial(_alter, bootstrap)

    done = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.keystore.location={rotated}"
    )
    assert done.returncode == 0, done
    assert await asyncio.to_thread(served, port) == _der(str(rotated))
    # the same path, a new file in it: set it again and it is loaded again
    _broker_cert(ca, rotated)
    done = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.keystore.location={rotated}"
    )
    assert done.returncode == 0, done
    third = _der(str(rotated))
    assert await asyncio.to_thread(served, port) == third
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    refused = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.keystore.location={broken}"
    )
    assert refused.returncode == 1, refused
    assert "cannot load a certificate and private key" in refused.stderr
    assert refused.stderr.count("\n") == 1
    # a certificate of another subject, or without one of the names, is not this broker's
    # (Kafka's KIP-978 checks; ssl.allow.dn.changes / ssl.allow.san.changes allow them)
    stranger = tmp_path / "stranger.pem"
    for names, unit, why in (
        ((), "someone else", "ssl.allow.dn.changes"),
        (("127.0.0.1",), _BROKER_UNIT, "ssl.allow.san.changes"),
    ):
        _broker_cert(ca, stranger, *names, unit=unit)
        refused = await asyncio.to_thread(
            alter, "--broker", "1", "--add-config", f"ssl.keystore.location={stranger}"
        )
        assert refused.returncode == 1 and why in refused.stderr, refused
    refused = await asyncio.to_thread(
        alter, "--broker-defaults", "--add-config", f"ssl.keystore.location={rotated}"
    )
    assert refused.returncode == 1 and "can only be set for one broker" in refused.stderr
    assert await asyncio.to_thread(served, port) == third  # nothing changed
    tls_client = {"security_protocol": "SSL", "ssl_context": create_ssl_context(cafile=pki["ca"])}
    async with Producer(bootstrap_servers=_ssl_bootstrap(cluster), **tls_client) as producer:
        written = await producer.send_and_wait("rotated", b"over the new certificate")
    assert written.offset == 0

    cluster.brokers[1].stop()
    cluster.start_broker(1)
    port = cluster.brokers[1].ports["SSL"]
    assert await asyncio.to_thread(served, port) == third  # read before it listens


def _admitted(port: int, ca: str, client_pem: str) -> bool:
    """Whether a TLS client showing ``client_pem``'s certificate is served: an
    ApiVersions request answered (TLS 1.3 refuses a client certificate after the
    handshake, at the first read)."""
    context = create_ssl_context(cafile=ca, certfile=client_pem)
    request = b"\x00\x12\x00\x00\x00\x00\x00\x07\x00\x01c"  # ApiVersions v0, id 7, client "c"
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as secure,
        ):
            secure.sendall(len(request).to_bytes(4, "big") + request)
            return len(secure.recv(4)) == 4
    except (ssl.SSLError, OSError):
        return False


async def test_the_cas_a_broker_trusts_are_replaced_without_a_restart(
    make_cluster: Callable[..., Cluster], ca: trustme.CA, pki: dict[str, str], tmp_path: Path
) -> None:
    """Kafka's dynamic ssl.truststore.location: broker 1, requiring client certificates,
    is given a truststore of another CA; from the next handshake its clients are the new
    CA's, and the old CA's are refused (a CA taken out, not only one added); a bad file is
    refused and changes nothing; only a broker may have its own."""
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.location": pki["broker"],
        "ssl.truststore.location": pki["ca"],
        "ssl.client.auth": "required",
    }
    cluster = make_cluster(1, settings)
    port = cluster.brokers[1].ports["SSL"]
    other = trustme.CA()
    other_ca, other_client = tmp_path / "other-ca.pem", tmp_path / "other-client.pem"
    other.cert_pem.write_to_path(str(other_ca))
    other.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
        str(other_client)
    )
    admitted = functools.partial(_admitted, port, pki["ca"])
    assert await asyncio.to_thread(admitted, pki["client"])
    assert not await asyncio.to_thread(admitted, str(other_client))

    alter = functools.partial(_alter, cluster.bootstrap)

    done = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.truststore.location={other_ca}"
    )
    assert done.returncode == 0, done
    assert await asyncio.to_thread(admitted, str(other_client))
    assert not await asyncio.to_thread(admitted, pki["client"])  # the old CA is out
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    refused = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.truststore.location={broken}"
    )
    assert refused.returncode == 1 and "cannot load CA certificates" in refused.stderr, refused
    refused = await asyncio.to_thread(
        alter, "--broker-defaults", "--add-config", f"ssl.truststore.location={pki['ca']}"
    )
    assert refused.returncode == 1 and "can only be set for one broker" in refused.stderr
    for empty, why in (
        ("ssl.truststore.location=", "needs ssl.truststore.location"),  # (the system's CAs)
        ("ssl.keystore.location=", "cannot load a certificate"),
    ):
        refused = await asyncio.to_thread(alter, "--broker", "1", "--add-config", empty)
        assert refused.returncode == 1 and why in refused.stderr, refused
    # a file broken in place, its path named again: refused as well
    good = other_ca.read_bytes()
    other_ca.write_text("not a certificate\n")
    refused = await asyncio.to_thread(
        alter, "--broker", "1", "--add-config", f"ssl.truststore.location={other_ca}"
    )
    assert refused.returncode == 1 and "cannot load CA certificates" in refused.stderr, refused
    other_ca.write_bytes(good)
    assert await asyncio.to_thread(admitted, str(other_client))  # nothing changed
    # a client of the new CA writes and reads over TLS
    tls_client = {
        "security_protocol": "SSL",
        "ssl_context": create_ssl_context(cafile=pki["ca"], certfile=str(other_client)),
    }
    async with Producer(bootstrap_servers=_ssl_bootstrap(cluster), **tls_client) as producer:
        written = await producer.send_and_wait("trusted", b"by the new CA")
    assert written.offset == 0
    # restarted, it trusts the dynamic truststore, read before it listens; gone, the
    # broker does not start on the static one (which would take the old CA back in)
    cluster.brokers[1].stop()
    cluster.start_broker(1)
    port = cluster.brokers[1].ports["SSL"]
    assert not await asyncio.to_thread(_admitted, port, pki["ca"], pki["client"])
    assert await asyncio.to_thread(_admitted, port, pki["ca"], str(other_client))
    cluster.brokers[1].stop()
    other_ca.unlink()
    with pytest.raises(BrokerStartError, match="dynamic TLS files do not load"):
        cluster.start_broker(1)

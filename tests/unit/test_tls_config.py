"""TLS settings, broker and client: what is refused, with which line, before anything
listens or connects."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from broker.config import ConfigError, load_config
from broker.tls import client_context, server_context
from client import Admin, create_ssl_context
from client.errors import ConfigurationError
from client.security import parse_properties, settings_from_properties


def _config(*overrides: str) -> object:
    return load_config(env={}, overrides=["broker.id=1", *overrides])


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("pem")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(folder / "broker.pem")
    )
    (folder / "junk.pem").write_text("not a certificate\n")
    return {p.stem: str(p) for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["listeners=A://h:1,A://h:2"], "the listener name A is used twice"),
        (["listeners=INTERNAL://h:1"], "listener INTERNAL has no security protocol"),
        (["listener.security.protocol.map=X:SASL_SSH"], "one of PLAINTEXT, SSL, SASL_PLAINTEXT"),
        (["listener.security.protocol.map=X"], "is not NAME:PROTOCOL"),
        (["advertised.listeners=SSL://h:2"], "advertised.listeners names SSL"),
        (["inter.broker.listener.name=SSL"], "inter.broker.listener.name='SSL' is not in"),
        (["listeners=PLAINTEXT://h:1,SSL://h:2"], "listener SSL is SSL: set ssl.keystore"),
        (["ssl.client.auth=maybe"], "none, requested or required"),
        (["listeners=A://h:1,B://h:1"], "two listeners on h:1"),
        (["listener.security.protocol.map=A:SSL,A:PLAINTEXT"], "A is mapped twice"),
        (
            ["listeners=SSL://h:1", "ssl.keystore.location=/k.pem", "ssl.client.auth=required"],
            "ssl.client.auth=required needs ssl.truststore.location",
        ),
        (["ssl.endpoint.identification.algorithm=dns"], "https or empty"),
    ],
)
def test_listener_settings_that_do_not_fit_are_one_line(overrides: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        _config(*overrides)


def test_named_listeners_map_to_protocols_and_advertise_by_name() -> None:
    config = _config(
        "listeners=INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9093",
        "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:SSL",
        "advertised.listeners=EXTERNAL://kafka.example:9093",
        "inter.broker.listener.name=INTERNAL",
        "ssl.keystore.location=/k.pem",
    )
    assert config.listener_protocols == {"INTERNAL": "PLAINTEXT", "EXTERNAL": "SSL"}
    assert config.advertised_listeners == [
        "INTERNAL://0.0.0.0:9092",
        "EXTERNAL://kafka.example:9093",
    ]
    assert config.inter_broker_listener == "INTERNAL"
    assert _config().inter_broker_listener == "PLAINTEXT"  # the first listener's


def test_a_keystore_or_truststore_that_does_not_load_says_which(pem: dict[str, str]) -> None:
    base = ["listeners=SSL://h:1"]
    bad_key = _config(*base, f"ssl.keystore.location={pem['junk']}")
    with pytest.raises(ConfigError, match=r"ssl\.keystore\.location=.*cannot load a certificate"):
        server_context(bad_key)  # type: ignore[arg-type]
    bad_trust = _config(
        *base,
        f"ssl.keystore.location={pem['broker']}",
        f"ssl.truststore.location={pem['junk']}",
        "ssl.client.auth=required",
    )
    with pytest.raises(ConfigError, match=r"ssl\.truststore\.location=.*cannot load CA"):
        server_context(bad_trust)  # type: ignore[arg-type]
    good = _config(
        *base, f"ssl.keystore.location={pem['broker']}", f"ssl.truststore.location={pem['ca']}"
    )
    assert server_context(good).verify_mode.name == "CERT_NONE"  # type: ignore[arg-type]
    assert client_context(good).check_hostname  # type: ignore[arg-type]


def test_client_tls_settings_that_do_not_fit(pem: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="needs ssl_context"):
        Admin(bootstrap_servers="h:1", security_protocol="SSL")
    with pytest.raises(ConfigurationError, match="security_protocol is PLAINTEXT"):
        Admin(bootstrap_servers="h:1", ssl_context=create_ssl_context(cafile=pem["ca"]))
    with pytest.raises(ConfigurationError, match="use one of PLAINTEXT, SSL, SASL_PLAINTEXT"):
        Admin(bootstrap_servers="h:1", security_protocol="TLS")
    with pytest.raises(ConfigurationError, match="cannot load CA certificates"):
        create_ssl_context(cafile=pem["junk"])
    with pytest.raises(ConfigurationError, match="cannot load a certificate and key"):
        create_ssl_context(certfile=pem["junk"])
    assert not create_ssl_context(cafile=pem["ca"], check_hostname=False).check_hostname


def test_kafkas_client_properties(pem: dict[str, str], tmp_path: Path) -> None:
    text = f"""# a Kafka client.properties
security.protocol=SSL
ssl.truststore.type=PEM
ssl.truststore.location={pem["ca"]}
request.timeout.ms = 5000
"""
    props = parse_properties(text)
    assert props["request.timeout.ms"] == "5000"
    settings = settings_from_properties(props, "client.properties")
    assert settings["security_protocol"] == "SSL" and settings["ssl_context"] is not None
    assert settings_from_properties({}, "x") == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ConfigurationError, match="only PEM files are read"):
        settings_from_properties({"ssl.truststore.type": "JKS"}, "client.properties")
    with pytest.raises(ConfigurationError, match=r"ssl\.truststore\.password is not supported"):
        settings_from_properties({"ssl.truststore.password": "x"}, "client.properties")
    with pytest.raises(ConfigurationError, match="use one of PLAINTEXT, SSL"):
        settings_from_properties({"security.protocol": "KERBEROS"}, "client.properties")

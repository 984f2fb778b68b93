"""SASL settings, broker and client: Kafka's names, what is refused with which line before
anything listens or connects, and that no password is shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from broker.config import ConfigError, load_config
from broker.sasl import peer_login, sasl_listeners
from client import Admin
from client.errors import ConfigurationError
from client.security import SaslLogin, security_for, settings_from_properties

_JAAS = (
    "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="broker" password="broker-pw" user_broker="broker-pw" user_alice="alice-pw";'
)


def _config(*overrides: str) -> object:
    return load_config(env={}, overrides=["broker.id=1", *overrides])


def test_sasl_listeners_take_their_users_and_brokers_their_own_login() -> None:
    config = _config(
        "listeners=INTERNAL://h:1,EXTERNAL://h:2",
        "listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL",
        "ssl.keystore.location=/k.pem",
        "inter.broker.listener.name=INTERNAL",
        _JAAS,
        # Kafka's per-listener form wins over the broker's sasl.jaas.config
        "listener.name.external.plain.sasl.jaas.config=x.PlainLoginModule required "
        'user_carol="carol-pw";',
    )
    listeners = sasl_listeners(config, None)  # type: ignore[arg-type]
    assert listeners["INTERNAL"].plain_users == {"broker": "broker-pw", "alice": "alice-pw"}
    assert listeners["EXTERNAL"].plain_users == {"carol": "carol-pw"}
    assert listeners["INTERNAL"].mechanisms == ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    login = peer_login(config)  # type: ignore[arg-type]
    assert login is not None and (login.mechanism, login.username) == ("PLAIN", "broker")
    assert peer_login(_config()) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["sasl.enabled.mechanisms=NTLM"], "'NTLM' is not one of PLAIN"),
        (["sasl.mechanism.inter.broker.protocol=OAUTHBEARER"], "use one of PLAIN"),
        (["listeners=S://h:1", "listener.security.protocol.map=S:SASL_SSL"], "S is SASL_SSL: set"),
        (["listener.name.x.ntlm.sasl.jaas.config=a"], "unknown setting"),
        (
            ["listener.name.nowhere.plain.sasl.jaas.config=a"],
            "names listener nowhere, which is not in listeners",
        ),
        (
            [
                "listeners=S://h:1",
                "listener.security.protocol.map=S:SASL_PLAINTEXT",
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
            ],
            "sasl.mechanism.inter.broker.protocol=PLAIN is not in sasl.enabled.mechanisms",
        ),
    ],
)
def test_sasl_settings_that_do_not_fit_are_one_line(overrides: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        _config(*overrides)


def test_a_bad_jaas_line_or_a_missing_broker_login_stops_the_start() -> None:
    sasl = ["listeners=S://h:1", "listener.security.protocol.map=S:SASL_PLAINTEXT"]
    with pytest.raises(ConfigError, match=r"sasl\.jaas\.config: .*LoginModule required"):
        sasl_listeners(_config(*sasl, 'sasl.jaas.config=user_a="b"'), None)  # type: ignore[arg-type]
    no_login = _config(*sasl, "sasl.jaas.config=x.PlainLoginModule required user_a=b;")
    with pytest.raises(ConfigError, match=r'inter-broker listener S is SASL: .*username="..."'):
        peer_login(no_login)  # type: ignore[arg-type]


def test_check_shows_no_password() -> None:
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "broker",
            "--check",
            "--set",
            "broker.id=1",
            "--set",
            "listeners=S://127.0.0.1:1",
            "--set",
            "listener.security.protocol.map=S:SASL_PLAINTEXT",
            "--set",
            _JAAS,
            "--set",
            "listener.name.s.scram-sha-256.sasl.jaas.config=x.ScramLoginModule required "
            'username="u" password="scram-pw";',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sasl.jaas.config=[hidden]  # --set" in checked.stdout
    assert "listener.name.s.scram-sha-256.sasl.jaas.config=[hidden]" in checked.stdout
    assert "-pw" not in checked.stdout


def test_client_sasl_settings_that_do_not_fit() -> None:
    assert security_for("SASL_PLAINTEXT", None, "SCRAM-SHA-512", "a", "pw") == (
        None,
        SaslLogin("SCRAM-SHA-512", "a", "pw"),
    )
    assert "pw" not in repr(SaslLogin("PLAIN", "a", "pw"))
    with pytest.raises(ConfigurationError, match="needs sasl_plain_username and"):
        Admin(bootstrap_servers="h:1", security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigurationError, match="sasl_mechanism='GSSAPI'"):
        security_for("SASL_PLAINTEXT", None, "GSSAPI", "a", "b")
    with pytest.raises(ConfigurationError, match="security_protocol is PLAINTEXT"):
        Admin(bootstrap_servers="h:1", sasl_plain_username="a", sasl_plain_password="b")
    with pytest.raises(ConfigurationError, match="needs ssl_context"):
        Admin(bootstrap_servers="h:1", security_protocol="SASL_SSL")


def test_kafkas_client_properties_for_sasl() -> None:
    props = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.jaas.config": 'x.ScramLoginModule required username="bob" password="pw";',
    }
    assert settings_from_properties(props, "p") == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "bob",
        "sasl_plain_password": "pw",
    }
    with pytest.raises(ConfigurationError, match=r"sasl\.mechanism=NTLM: use one of"):
        settings_from_properties({**props, "sasl.mechanism": "NTLM"}, "p")
    with pytest.raises(ConfigurationError, match=r'needs username="\.\.\." password="\.\.\."'):
        settings_from_properties({**props, "sasl.jaas.config": "x required;"}, "p")
    with pytest.raises(ConfigurationError, match=r"sasl\.jaas\.config: "):
        settings_from_properties({**props, "sasl.jaas.config": "nonsense"}, "p")
    with pytest.raises(ConfigurationError, match=r"sasl\.login\.class is not supported"):
        settings_from_properties({**props, "sasl.login.class": "x"}, "p")

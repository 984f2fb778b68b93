"""SASL GSSAPI's pure parts: Kerberos names, Kafka's principal-to-local rules (its own
test cases among them), RFC 4752's security-layer messages, and the two sides' exchanges
driven over stand-in GSS-API contexts (which call each message takes, in Kafka's order).
Also the settings that name them: a bad rule stops a broker's start, and Kafka's client
properties for GSSAPI become the client's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.config import ConfigError, load_config
from broker.kerberos import _keytab_login
from client.errors import ConfigurationError
from client.security import security_for, settings_from_properties
from protocol.kerberos import (
    AcceptorExchange,
    InitiatorExchange,
    KerberosName,
    ShortNamer,
    layer_choice,
    layer_offer,
    parse_layer_choice,
    parse_layer_offer,
)
from protocol.sasl import SaslError


def test_a_principal_has_a_primary_an_instance_and_a_realm() -> None:
    name = KerberosName.parse("kafka/broker1.example.com@EXAMPLE.COM")
    assert (name.primary, name.instance, name.realm) == (
        "kafka",
        "broker1.example.com",
        "EXAMPLE.COM",
    )
    assert str(name) == "kafka/broker1.example.com@EXAMPLE.COM"
    assert KerberosName.parse("alice") == KerberosName("alice", None, None)
    for bad in ("", "a/b/c@R", "@R", "a@b@c"):
        with pytest.raises(SaslError, match="not a Kerberos principal"):
            KerberosName.parse(bad)


def test_default_is_the_primary_in_the_default_realm_only() -> None:
    namer = ShortNamer(["DEFAULT"], "EXAMPLE.COM")
    assert namer.short_name("alice@EXAMPLE.COM") == "alice"
    assert namer.short_name("kafka/host.example.com@EXAMPLE.COM") == "kafka"
    assert namer.short_name("alice") == "alice"  # no realm: the name itself
    with pytest.raises(SaslError, match=r"no sasl\.kerberos\.principal\.to\.local\.rules rule"):
        namer.short_name("alice@OTHER.COM")


def test_kafkas_rules_format_match_substitute_and_change_case() -> None:
    # Kafka's KerberosNameTest cases
    namer = ShortNamer(
        [
            r"RULE:[1:$1](App\..*)s/App\.(.*)/$1/g",
            r"RULE:[2:$1](App\..*)s/App\.(.*)/$1/g",
            "DEFAULT",
        ],
        "REALM.COM",
    )
    assert namer.short_name("App.service-name/example.com@REALM.COM") == "service-name"
    assert namer.short_name("App.service-name@REALM.COM") == "service-name"
    assert namer.short_name("user/host@REALM.COM") == "user"
    lower = ShortNamer(["RULE:[1:$1]/L", "RULE:[2:$1]/L", "DEFAULT"], "REALM.COM")
    assert lower.short_name("User@REALM.COM") == "user"
    assert lower.short_name("TestABC/host@FOO.COM") == "testabc"
    upper = ShortNamer(["RULE:[1:$1]/U", "RULE:[2:$1]/U", "DEFAULT"], "REALM.COM")
    assert upper.short_name("User@REALM.COM") == "USER"
    # without g the first match is replaced, with g every one; $0 is the realm
    assert ShortNamer(["RULE:[2:$1-$2]s/-/_/"], "R").short_name("svc/a-b@R") == "svc_a-b"
    assert ShortNamer(["RULE:[2:$1-$2]s/-/_/g"], "R").short_name("svc/a-b@R") == "svc_a_b"
    realm = ShortNamer([r"RULE:[1:$0.$1](EX\.COM\..*)s/\./-/g"], "R")
    assert realm.short_name("alice@EX.COM") == "EX-COM-alice"


def test_a_rule_applies_only_to_names_of_its_component_count() -> None:
    one = ShortNamer(["RULE:[1:$1]", "RULE:[2:$1+$2]"], "R")
    assert one.short_name("alice@R") == "alice"
    assert one.short_name("svc/host@R") == "svc+host"
    two_only = ShortNamer(["RULE:[2:$1]"], "R")
    with pytest.raises(SaslError, match="no sasl"):
        two_only.short_name("alice@R")
    assert ShortNamer([], "R").short_name("alice") == "alice"  # no realm: itself
    with pytest.raises(SaslError, match="no sasl"):  # no rules: none applies (Kafka's)
        ShortNamer([], "R").short_name("alice@R")


def test_replacements_are_javas_and_checked_when_read() -> None:
    # $n and ${name} are groups, a backslash quotes the next character
    namer = ShortNamer([r"RULE:[1:$1](a.*)s/a(?P<rest>.*)/${rest}\$$1x/"], "R")
    assert namer.short_name("abc@R") == "bc$bcx"
    # Java reads as many digits as name a group: $12 is group 1, then "2", with one group
    assert ShortNamer([r"RULE:[1:$1]s/(a)/$12/"], "R").short_name("ab@R") == "a2b"
    for bad in (
        "RULE:[1:$1](a.*)s/(a)/$2/",  # no group 2
        "RULE:[1:$1]s/(a)/${nope}/",  # no such named group
        "RULE:[1:$1]s/a/x$/",  # $ with no group
        "RULE:[1:$2]",  # a one-component name has no $2
        "RULE:[1:$]",  # $ with no number
    ):
        with pytest.raises(SaslError):
            ShortNamer([bad], "R")


def test_a_rule_that_leaves_a_realm_or_instance_is_refused() -> None:
    namer = ShortNamer(["RULE:[2:$1@$0]"], "R")
    with pytest.raises(SaslError, match="not a user name"):
        namer.short_name("svc/host@R")


@pytest.mark.parametrize(
    "rule",
    [
        "RULE:[1:$1]/L/U",
        "RULE:[1:$1]/U/L",
        "RULE:[1:$1]/LU",
        "RULE:[1:$1]/UL",
        "RULE:[1:$1]/LL",
        "RULE:[1:$1]/UU",
        "RULE:[1:$1]/ L",
        "RULE:[1:$1]/ U",
        "DEFAULTS",
        "RULE:1:$1",
        "RULE:[1:$1](a[)",
    ],
)
def test_kafkas_invalid_rules_are_refused(rule: str) -> None:
    with pytest.raises(SaslError):
        ShortNamer([rule], "R")


@pytest.mark.parametrize(
    ("rule", "why"),
    [("RULE:[1:$1]/LU", "principal-to-local rule"), ("RULE:[1:$1]s/(a)/$2/", "group")],
)
def test_a_broker_with_a_bad_rule_does_not_start(rule: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        load_config(
            env={}, overrides=["broker.id=1", f"sasl.kerberos.principal.to.local.rules={rule}"]
        )


def test_the_layer_messages_offer_and_take_no_security_layer() -> None:
    assert layer_offer() == b"\x01\x01\x00\x00"  # none; 64 KiB, as the JDK's server
    assert parse_layer_offer(layer_offer()) == 65_536
    assert parse_layer_choice(layer_choice(65_536, "alice@R")) == "alice@R"
    with pytest.raises(SaslError, match="requires a security layer"):
        parse_layer_offer(b"\x04\x01\x00\x00")  # confidentiality only
    with pytest.raises(SaslError, match="only 'none'"):
        parse_layer_choice(b"\x02\x00\x00\x00")  # integrity
    with pytest.raises(SaslError, match="bytes"):
        parse_layer_offer(b"\x01")


@dataclass
class _Wrapped:
    message: bytes


@dataclass
class _Context:
    """A GSS-API context that records its calls: its context tokens come from
    ``tokens``, and it is complete once they are used up."""

    tokens: list[bytes | None]
    name: str
    calls: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.tokens

    @property
    def initiator_name(self) -> str:
        return self.name

    def step(self, token: bytes | None = None) -> bytes | None:
        self.calls.append(("step", token))
        return self.tokens.pop(0)

    def wrap(self, message: bytes, encrypt: bool) -> _Wrapped:
        self.calls.append(("wrap", (message, encrypt)))
        return _Wrapped(b"W" + message)

    def unwrap(self, message: bytes) -> _Wrapped:
        self.calls.append(("unwrap", message))
        assert message.startswith(b"W"), message
        return _Wrapped(message[1:])


def test_the_two_sides_exchange_in_kafkas_order() -> None:
    client_context = _Context([b"AP-REQ", None], "alice@R")
    server_context = _Context([b"AP-REP"], "alice@R")
    client = InitiatorExchange(client_context)
    server = AcceptorExchange(server_context)
    sent = [client.first()]
    answers = []
    message: bytes | None = sent[0]
    while message is not None:
        answer = server.step(message)
        answers.append(answer)
        message = client.step(answer)
        if message is not None:
            sent.append(message)
    # the choice: no layer, so no buffer (RFC 4752's 0), and our principal as authzid
    assert sent == [b"AP-REQ", b"", b"W\x01\x00\x00\x00alice@R"]
    assert answers == [b"AP-REP", b"W\x01\x01\x00\x00", b""]
    assert server.principal == "alice@R"
    # the offer and the choice are wrapped without confidentiality (integrity only)
    assert ("wrap", (b"\x01\x01\x00\x00", False)) in server_context.calls


def test_a_message_after_the_end_is_refused_on_both_sides() -> None:
    server = AcceptorExchange(_Context([b"AP-REP"], "alice@R"))
    for message in (b"AP-REQ", b"", b"W\x01\x00\x00\x00"):
        server.step(message)
    with pytest.raises(SaslError, match="after the exchange ended"):
        server.step(b"more")
    client = InitiatorExchange(_Context([b"AP-REQ", None], "alice@R"))
    client.first()
    client.step(b"AP-REP")
    client.step(b"W\x01\x01\x00\x00")
    with pytest.raises(SaslError, match="after the exchange ended"):
        client.step(b"more")


def test_without_mutual_authentication_the_offer_comes_at_once() -> None:
    # a context complete with no token to send back (the client asked for no AP-REP):
    # the offer is the answer to its token, as the JDK's and cyrus' servers answer
    server = AcceptorExchange(_Context([None], "alice@R"))
    assert server.step(b"AP-REQ") == b"W\x01\x01\x00\x00"
    assert server.step(b"W\x01\x00\x00\x00") == b""
    assert server.principal == "alice@R"


def test_a_client_choosing_a_security_layer_is_refused() -> None:
    server = AcceptorExchange(_Context([None], "alice@R"))
    server.step(b"AP-REQ")
    with pytest.raises(SaslError, match="only 'none'"):
        server.step(b"W\x04\x00\x00\x00")
    assert server.principal is None


def test_data_where_the_empty_message_is_due_is_refused() -> None:
    server = AcceptorExchange(_Context([b"AP-REP"], "alice@R"))
    server.step(b"AP-REQ")
    with pytest.raises(SaslError, match="empty message is due"):
        server.step(b"W\x01\x00\x00\x00")


def test_kafkas_gssapi_client_properties_become_the_clients_settings() -> None:
    keytab_line = (
        "com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true "
        'storeKey=true keyTab="/etc/alice.keytab" principal="alice@EXAMPLE.COM";'
    )
    settings = settings_from_properties(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "GSSAPI",
            "sasl.kerberos.service.name": "kafka",
            "sasl.jaas.config": keytab_line,
        },
        "client.properties",
    )
    assert settings == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "GSSAPI",
        "sasl_kerberos_service_name": "kafka",
        "sasl_kerberos_keytab": "/etc/alice.keytab",
        "sasl_kerberos_principal": "alice@EXAMPLE.COM",
    }
    cache = settings_from_properties(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "GSSAPI",
            "sasl.jaas.config": (
                "com.sun.security.auth.module.Krb5LoginModule required useTicketCache=true "
                'serviceName="kafka";'
            ),
            "ssl.endpoint.identification.algorithm": "",
        },
        "client.properties",
    )
    assert cache["sasl_kerberos_service_name"] == "kafka"
    assert "sasl_kerberos_keytab" not in cache
    bare = settings_from_properties(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "GSSAPI"}, "p"
    )  # no JAAS line: the environment's credentials
    assert bare == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "GSSAPI",
        "sasl_kerberos_service_name": "",
    }
    with pytest.raises(ConfigurationError, match="keyTab"):
        settings_from_properties(
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "GSSAPI",
                "sasl.jaas.config": "x.Krb5LoginModule required useKeyTab=true;",
            },
            "client.properties",
        )


def test_a_gssapi_login_takes_no_password_and_needs_a_service() -> None:
    _, login = security_for("SASL_PLAINTEXT", None, "GSSAPI")
    assert login is not None
    assert (login.mechanism, login.kerberos_service_name, login.kerberos_keytab) == (
        "GSSAPI",
        "kafka",
        None,
    )
    with pytest.raises(ConfigurationError, match="not sasl_plain_username"):
        security_for("SASL_PLAINTEXT", None, "GSSAPI", "alice", "secret")
    with pytest.raises(ConfigurationError, match="needs sasl_kerberos_service_name"):
        security_for("SASL_PLAINTEXT", None, "GSSAPI", sasl_kerberos_service_name="")
    with pytest.raises(ConfigurationError, match="go together"):
        security_for("SASL_PLAINTEXT", None, "GSSAPI", sasl_kerberos_keytab="/k")


def test_a_gssapi_listener_needs_a_keytab_principal_of_its_service() -> None:
    jaas = {"keyTab": "/etc/kafka.keytab", "principal": "kafka/h@R"}
    assert _keytab_login("l", jaas, "kafka") == ("/etc/kafka.keytab", "kafka/h@R")
    assert _keytab_login("l", jaas, "") == ("/etc/kafka.keytab", "kafka/h@R")
    with pytest.raises(ConfigError, match=r"sasl\.kerberos\.service\.name is 'other'"):
        _keytab_login("l", jaas, "other")
    with pytest.raises(ConfigError, match=r"needs keyTab=.* and principal"):
        _keytab_login("l", {"principal": "kafka/h@R"}, "kafka")
    with pytest.raises(ConfigError, match="not a Kerberos principal"):
        _keytab_login("l", {**jaas, "principal": "a/b/c@R"}, "kafka")

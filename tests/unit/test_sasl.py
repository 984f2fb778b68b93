"""SASL's mechanisms (protocol.sasl): RFC 7677's SCRAM-SHA-256 example, both sides; what a
wrong password, a forged server or a malformed message gets; PLAIN and JAAS parsing."""

from __future__ import annotations

import base64

import pytest

from protocol.sasl import (
    SaslError,
    ScramClient,
    ScramCredential,
    ScramServer,
    parse_jaas,
    parse_plain,
    plain_message,
    salted_password,
)

# RFC 7677, section 3
_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _credential() -> ScramCredential:
    return ScramCredential.make("SCRAM-SHA-256", "pencil", 4096, salt=_SALT)


def test_rfc_7677_exchange_byte_for_byte() -> None:
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce=_CLIENT_NONCE)
    server = ScramServer("SCRAM-SHA-256", nonce=_SERVER_NONCE)
    first = client.first()
    assert first == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert server.first(first) == "user"
    challenge = server.challenge(_credential())
    assert challenge == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = client.final(challenge)
    assert final == _CLIENT_FINAL
    answer = server.final(final)
    assert answer == _SERVER_FINAL
    client.verify(answer)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_wrong_password_is_refused_and_a_right_one_taken(mechanism: str) -> None:
    credential = ScramCredential.make(mechanism, "right", 4096)
    for password, accepted in (("wrong", False), ("right", True)):
        client, server = ScramClient(mechanism, "alice", password), ScramServer(mechanism)
        server.first(client.first())
        final = client.final(server.challenge(credential))
        if accepted:
            client.verify(server.final(final))
        else:
            with pytest.raises(SaslError, match="invalid credentials"):
                server.final(final)


def test_a_server_that_does_not_know_the_credential_is_caught_by_the_client() -> None:
    client, server = ScramClient("SCRAM-SHA-256", "user", "pencil"), ScramServer("SCRAM-SHA-256")
    server.first(client.first())
    client.final(server.challenge(_credential()))
    with pytest.raises(SaslError, match="signature is wrong"):
        client.verify(b"v=" + base64.b64encode(b"\0" * 32))


def test_the_credential_kept_is_kafkas_text_and_the_salted_form_matches() -> None:
    credential = _credential()
    text = credential.to_text()
    assert text.startswith("salt=W22ZaJ0SNY7soEsUEjb6gQ==,stored_key=")
    assert text.endswith(",iterations=4096")
    assert ScramCredential.from_text(text) == credential
    salted = salted_password("SCRAM-SHA-256", "pencil", _SALT, 4096)
    assert ScramCredential.from_salted("SCRAM-SHA-256", salted, _SALT, 4096) == credential
    with pytest.raises(SaslError, match="not a SCRAM credential"):
        ScramCredential.from_text("salt=AAAA,iterations=4096")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (b"p=tls-unique,,n=user,r=abc", "channel binding"),
        (b"n,,n=user", "lacks n or r"),
        (b"n,,n=us=er,r=abc", "escape"),
        (b"n,,n=user,r=abc,m=ext", "extensions"),
        (b"n,a=other,n=user,r=abc", "authorization id"),
        (b"garbage", "channel binding"),
    ],
)
def test_a_malformed_client_first_message_is_a_clear_error(message: bytes, problem: str) -> None:
    with pytest.raises(SaslError, match=problem):
        ScramServer("SCRAM-SHA-256").first(message)


def test_a_final_message_with_another_nonce_or_before_the_challenge_is_refused() -> None:
    client, server = ScramClient("SCRAM-SHA-256", "user", "pencil"), ScramServer("SCRAM-SHA-256")
    server.first(client.first())
    with pytest.raises(SaslError, match="before the challenge"):
        server.final(b"c=biws,r=x,p=AAAA")
    server.challenge(_credential())
    with pytest.raises(SaslError, match="nonce"):
        server.final(b"c=biws,r=someone-else,p=AAAA")
    with pytest.raises(SaslError, match="proof"):
        server.final(b"c=biws,r=x")


def test_usernames_with_commas_and_equals_are_escaped_both_ways() -> None:
    client = ScramClient("SCRAM-SHA-512", "a,b=c", "pw")
    assert b"n=a=2Cb=3Dc," in client.first()
    assert ScramServer("SCRAM-SHA-512").first(client.first()) == "a,b=c"


def test_plain() -> None:
    assert parse_plain(plain_message("alice", "pw")) == ("alice", "pw")
    assert parse_plain(b"alice\0alice\0pw") == ("alice", "pw")
    for bad in (b"alice\0pw", b"\0alice\0", b"bob\0alice\0pw"):
        with pytest.raises(SaslError):
            parse_plain(bad)


def test_jaas_options_as_kafka_writes_them() -> None:
    text = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required\n"
        '  username="admin" password="a \\"quoted\\" secret"\n'
        '  user_admin="admin-secret" user_alice=bare;'
    )
    assert parse_jaas(text) == {
        "username": "admin",
        "password": 'a "quoted" secret',
        "user_admin": "admin-secret",
        "user_alice": "bare",
    }
    for bad in ('username="x";', 'Module required username="x" ???'):
        with pytest.raises(SaslError, match=r"sasl\.jaas\.config|LoginModule"):
            parse_jaas(bad)


@pytest.mark.parametrize("iterations", [1, 4095, 16385, 10_000_000])
def test_a_client_refuses_iterations_outside_kafkas_bounds(iterations: int) -> None:
    """From a review: i=1 made the proof cheap to crack for a rogue server, and a huge
    count stalled the client as long as the server liked."""
    client = ScramClient("SCRAM-SHA-256", "user", "pencil", nonce=_CLIENT_NONCE)
    challenge = f"r={_CLIENT_NONCE}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={iterations}".encode()
    with pytest.raises(SaslError, match="only 4096 to 16384"):
        client.final(challenge)


def test_a_jaas_error_does_not_repeat_the_line() -> None:
    with pytest.raises(SaslError) as caught:
        parse_jaas('x.PlainLoginModule required username="admin" !! password="s3cret";')
    assert "s3cret" not in str(caught.value) and "character" in str(caught.value)


def test_a_huge_plain_authzid_is_not_echoed_whole() -> None:
    """From review 89: before a login a message may be 100 MB; its refusal (logged, and
    sent back) must not carry it whole."""
    with pytest.raises(SaslError) as refused:
        parse_plain(b"x" * 1_000_000 + b"\0alice\0pw")
    assert len(str(refused.value)) < 1_000

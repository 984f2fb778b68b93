"""OAUTHBEARER tokens from an OAuth 2 token endpoint (the client credentials grant, as
Kafka's clients fetch them with sasl.oauthbearer.token.endpoint.url): what is sent, when
a token is fetched again, and what a refusal says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import http.server
import json
import math
import threading
import urllib.parse
from collections.abc import Iterator, Mapping

import pytest

from client.errors import ConfigurationError
from client.oauth import ClientCredentialsTokenProvider, TokenEndpointError
from client.security import settings_from_properties
from protocol.oauthbearer import unsecured_token


class _Endpoint:
    """A token endpoint, and a clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.asked: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        self.answer: tuple[int, bytes] | Exception = (200, b"")
        """Given by the next fetch: an answer (b"": a new token), or raised."""
        self.lifetime = 100
        self.issued = 0

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], _timeout: float
    ) -> tuple[int, bytes]:
        self.asked.append((url, urllib.parse.parse_qs(body.decode()), dict(headers)))
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer[1]:
            return self.answer
        self.issued += 1
        token = f"token-{self.issued}"
        return 200, json.dumps({"access_token": token, "expires_in": self.lifetime}).encode()

    def provider(self, **more: object) -> ClientCredentialsTokenProvider:
        return ClientCredentialsTokenProvider(
            "https://idp.test/token",
            "svc:orders",
            "s3cr&t",
            clock=lambda: self.now,
            post=self.post,
            **more,  # type: ignore[arg-type]
        )


async def test_the_grant_is_sent_as_kafkas_clients_send_it() -> None:
    idp = _Endpoint()
    assert await idp.provider(scope="kafka").token() == "token-1"
    [(url, form, headers)] = idp.asked
    assert url == "https://idp.test/token"
    assert form == {"grant_type": ["client_credentials"], "scope": ["kafka"]}
    # id and secret as given, then Basic (Kafka's HttpAccessTokenRetriever)...
    assert _basic(headers) == b"svc:orders:s3cr&t"
    assert "s3cr" not in repr(idp.provider())
    # ... or each form-encoded first (KIP-1025's sasl.oauthbearer.header.urlencode)
    await idp.provider(urlencode=True).token()
    assert _basic(idp.asked[-1][2]) == b"svc%3Aorders:s3cr%26t"


def _basic(headers: dict[str, str]) -> bytes:
    return base64.b64decode(headers["Authorization"].removeprefix("Basic "))


async def test_a_token_is_kept_until_most_of_its_life_has_passed() -> None:
    idp = _Endpoint()
    provider = idp.provider()
    tokens = await asyncio.gather(*(provider.token() for _ in range(5)))
    assert tokens == ["token-1"] * 5 and len(idp.asked) == 1  # one fetch for them all
    idp.now += 79
    assert await provider.token() == "token-1"
    idp.now += 2  # past 80% of 100 s (Kafka's sasl.login.refresh.window.factor): the
    # next one is fetched in the background, and this login goes on with the current one
    assert await provider.token() == "token-1"
    await _renewed(provider)
    assert await provider.token() == "token-2" and len(idp.asked) == 2


async def _renewed(provider: ClientCredentialsTokenProvider) -> None:
    """The background renewal a login started, done (whether it worked or not)."""
    fetching = provider._fetching
    assert fetching is not None, "no renewal was started"
    await asyncio.wait([fetching])


async def test_a_failed_renewal_keeps_the_token_until_it_expires() -> None:
    idp = _Endpoint()
    provider = idp.provider()
    await provider.token()
    idp.answer = http.client.IncompleteRead(b'{"access_tok', 100)  # (not an OSError)
    idp.now += 90
    assert await provider.token() == "token-1"  # still good for 10 s
    await _renewed(provider)
    assert len(idp.asked) == 2
    assert await provider.token() == "token-1"  # the renewal failed; tried again
    idp.answer = OSError("connection refused")
    idp.now += 11
    with pytest.raises(TokenEndpointError, match=r"https://idp\.test/token: .*connection refused"):
        await provider.token()
    idp.answer = (200, b"")
    assert await provider.token() == "token-2"


async def test_a_token_expired_already_is_fetched_again_at_the_next_login() -> None:
    idp = _Endpoint()
    stale = unsecured_token("svc", int((idp.now - 120) * 1000), lifetime_s=60)
    idp.answer = (200, json.dumps({"access_token": stale, "expires_in": math.inf}).encode())
    provider = idp.provider()
    assert await provider.token() == stale  # (what the endpoint gave: the broker says)
    idp.answer = (200, b"")
    assert await provider.token() == "token-1"  # not kept an hour, nor for ever


async def test_the_secret_does_not_follow_a_redirect() -> None:
    elsewhere: list[str | None] = []

    class Thief(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            elsewhere.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *_args: object) -> None:
            pass

    with _serving(Thief) as thief:

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.send_response(302)
                self.send_header("Location", f"{thief}/steal")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        with _serving(Redirect) as idp:
            provider = ClientCredentialsTokenProvider(f"{idp}/token", "svc", "secret")
            with pytest.raises(TokenEndpointError, match=r"302, a redirect to .*not sent there"):
                await provider.token()
    assert elsewhere == []


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (
            (401, b'{"error": "invalid_client", "error_description": "bad secret"}'),
            "answered 401: invalid_client bad secret; check the client id",
        ),
        ((502, b"<html>\n<b>Bad gateway</b>\n</html>"), "answered 502: <html> <b>Bad gateway</b>"),
        ((200, b'{"token_type": "Bearer"}'), "without an access_token"),
        ((200, b"not json"), "without an access_token: not json"),
    ],
)
async def test_a_refusal_says_what_the_endpoint_said(
    answer: tuple[int, bytes], problem: str
) -> None:
    idp = _Endpoint()
    idp.answer = answer
    with pytest.raises(TokenEndpointError, match=problem):
        await idp.provider().token()


async def test_without_expires_in_the_tokens_own_expiry_counts() -> None:
    idp = _Endpoint()
    jwt = unsecured_token("svc", int(idp.now * 1000), lifetime_s=50)
    idp.answer = (200, json.dumps({"access_token": jwt}).encode())
    provider = idp.provider()
    await provider.token()
    idp.now += 39
    await provider.token()
    assert len(idp.asked) == 1
    idp.now += 2  # past 80% of 50 s: renewed in the background
    await provider.token()
    await _renewed(provider)
    assert len(idp.asked) == 2


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(ConfigurationError, match=r"token endpoint, an https://"):
        ClientCredentialsTokenProvider("idp.test/token", "a", "b")
    with pytest.raises(ConfigurationError, match="needs client_id and client_secret"):
        ClientCredentialsTokenProvider("https://idp.test/token", "a", "")


def test_kafkas_oidc_login_in_a_properties_file() -> None:
    props = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.login.callback.handler.class": "org.apache.kafka.common.security.oauthbearer."
        "OAuthBearerLoginCallbackHandler",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.test/token",
        "sasl.jaas.config": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule "
        'required clientId="svc" clientSecret="pw" scope="kafka";',
    }
    with pytest.raises(ConfigurationError):  # (SASL_SSL wants a trust store it can read)
        settings_from_properties({**props, "ssl.truststore.location": "/nowhere.pem"}, "c")
    props["security.protocol"] = "SASL_PLAINTEXT"
    provider = settings_from_properties(props, "c.properties")["sasl_oauth_token_provider"]
    assert isinstance(provider, ClientCredentialsTokenProvider)
    assert provider.url == "https://idp.test/token"
    props["sasl.jaas.config"] = 'x.OAuthBearerLoginModule required clientId="svc";'
    with pytest.raises(ConfigurationError, match=r'needs clientId="\.\.\." clientSecret'):
        settings_from_properties(props, "c.properties")

"""OAUTHBEARER tokens from an OAuth 2 token endpoint (the client credentials grant, RFC
6749 4.4): what Kafka's clients do with ``sasl.oauthbearer.token.endpoint.url``,
``clientId`` and ``clientSecret`` (KIP-768), as a ``sasl_oauth_token_provider``.

A token is fetched when first needed and kept until ``refresh_window_factor`` (Kafka's
``sasl.login.refresh.window.factor``, 0.8) of its life has passed; logins meanwhile take
it as it is. A renewal that fails leaves the token in use until it expires (the broker
would refuse it after), and is tried again at the next login; without a token, the
failure is the login's error, in one line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping

from client.errors import ConfigurationError

__all__ = ["ClientCredentialsTokenProvider", "TokenEndpointError"]

_MAX_ANSWER = 1 << 20
_DEFAULT_LIFETIME_S = 3600.0  # an answer with neither expires_in nor a JWT's exp


class TokenEndpointError(Exception):
    """The token endpoint did not give a token: its answer, in one line."""


Post = Callable[[str, bytes, Mapping[str, str], float], tuple[int, bytes]]


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
    """(status, body) of a POST (blocking: called in a worker thread)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status, answer.read(_MAX_ANSWER)
    except urllib.error.HTTPError as exc:  # an answer all the same: its body says why
        return exc.code, exc.read(_MAX_ANSWER)


class ClientCredentialsTokenProvider:
    """Tokens from ``token_endpoint_url`` for ``client_id``/``client_secret`` (sent as
    HTTP Basic, form-encoded first, as Kafka's clients send them), with ``scope`` if
    given."""

    def __init__(
        self,
        token_endpoint_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        refresh_window_factor: float = 0.8,
        timeout_s: float = 10.0,
        extensions: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        post: Post = _post,
    ) -> None:
        if not token_endpoint_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"token_endpoint_url={token_endpoint_url!r}: give the identity provider's "
                "https:// token endpoint"
            )
        if not client_id or not client_secret:
            raise ConfigurationError(
                "ClientCredentialsTokenProvider needs client_id and client_secret"
            )
        if not 0.5 <= refresh_window_factor <= 1.0:
            raise ConfigurationError("refresh_window_factor: between 0.5 and 1.0 (Kafka's bounds)")
        self.url = token_endpoint_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._factor = refresh_window_factor
        self._timeout_s = timeout_s
        self._extensions = dict(extensions or {})
        self._clock = clock
        self._post = post
        self._token: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._fetching: asyncio.Task[None] | None = None

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"ClientCredentialsTokenProvider({self.url!r}, {self._client_id!r})"

    def extensions(self) -> dict[str, str]:
        return dict(self._extensions)

    async def token(self) -> str:
        now = self._clock()
        if self._token is not None and now < self._renew_at:
            return self._token
        if self._fetching is None:  # one fetch for every login waiting on it
            self._fetching = asyncio.get_running_loop().create_task(self._fetch())
        fetching = self._fetching
        try:
            await asyncio.shield(fetching)
        except TokenEndpointError:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token  # still good: the next login tries again
            raise
        assert self._token is not None
        return self._token

    async def _fetch(self) -> None:
        try:
            status, body = await asyncio.to_thread(
                self._post, self.url, self._form(), self._headers(), self._timeout_s
            )
        except OSError as exc:
            raise TokenEndpointError(f"token endpoint {self.url}: {exc}") from None
        finally:
            self._fetching = None
        if status != 200:
            raise TokenEndpointError(
                f"token endpoint {self.url} answered {status}: {_said(body)}; check the "
                "client id, secret and scope"
            )
        try:
            answer = json.loads(body)
            token = answer["access_token"]
            if not isinstance(token, str) or not token:
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise TokenEndpointError(
                f"token endpoint {self.url} answered without an access_token: {_said(body)}"
            ) from None
        now = self._clock()
        lifetime = _lifetime(answer, token, now)
        self._token = token
        self._expires_at = now + lifetime
        self._renew_at = now + lifetime * self._factor

    def _form(self) -> bytes:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        return urllib.parse.urlencode(form).encode()

    def _headers(self) -> dict[str, str]:
        pair = f"{urllib.parse.quote(self._client_id)}:{urllib.parse.quote(self._client_secret)}"
        return {
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }


def _lifetime(answer: object, token: str, now: float) -> float:
    """Seconds the token lives: the answer's expires_in, else its JWT's exp."""
    expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0:
        return float(expires_in)
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        exp = claims["exp"]
        if isinstance(exp, int | float) and exp > now:
            return float(exp) - now
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        pass  # an opaque token: not ours to read
    return _DEFAULT_LIFETIME_S


def _said(body: bytes) -> str:
    """An answer's body, short and on one line (an OAuth error's description if any)."""
    try:
        error = json.loads(body)
        if isinstance(error, dict) and "error" in error:
            return " ".join(str(error[k]) for k in ("error", "error_description") if k in error)
    except (ValueError, RecursionError):
        pass
    text = body[:200].decode(errors="replace")
    return " ".join(text.split()) or "(empty)"

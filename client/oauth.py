"""OAUTHBEARER tokens from an OAuth 2 token endpoint (the client credentials grant, RFC
6749 4.4): what Kafka's clients do with ``sasl.oauthbearer.token.endpoint.url``,
``clientId`` and ``clientSecret`` (KIP-768), as a ``sasl_oauth_token_provider``.

A token is fetched when first needed. Once ``refresh_window_factor`` (Kafka's
``sasl.login.refresh.window.factor``, 0.8) of its life has passed, the next login starts
fetching the next one in the background and goes on with the current one, as Kafka's
clients refresh ahead of expiry (a login, a re-authentication above all, never waits for
the identity provider while it holds a good token). A renewal that fails leaves the token
in use until it expires, and is tried again at the next login; without a good token, the
failure is the login's error, in one line.

The client id and secret are sent as HTTP Basic, as given (``urlencode=True``: each
form-encoded first, Kafka's ``sasl.oauthbearer.header.urlencode`` of KIP-1025), and never
to another address: the endpoint answering with a redirect is an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from client.errors import ConfigurationError

__all__ = ["ClientCredentialsTokenProvider", "TokenEndpointError"]

_log = logging.getLogger("headwater.client.oauth")
_MAX_ANSWER = 1 << 20
_DEFAULT_LIFETIME_S = 3600.0  # an answer with neither expires_in nor a JWT's exp


class TokenEndpointError(Exception):
    """The token endpoint did not give a token: its answer, in one line."""


Post = Callable[[str, bytes, Mapping[str, str], float], tuple[int, bytes]]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would follow a redirect with every header, the secret's included."""

    def redirect_request(self, req: Any, *args: Any) -> None:
        code, newurl = args[1], args[4]  # (fp, code, msg, headers, newurl)
        raise TokenEndpointError(
            f"token endpoint {req.full_url} answered {code}, a redirect to {newurl}: the "
            "client secret is not sent there; give the endpoint's own URL"
        )


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
    """(status, body) of a POST (blocking: called in a worker thread)."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as answer:
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
        urlencode: bool = False,
        refresh_window_factor: float = 0.8,
        timeout_s: float = 10.0,
        extensions: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        post: Post = _post,
    ) -> None:
        if not token_endpoint_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"token_endpoint_url={token_endpoint_url!r}: give the identity provider's "
                "token endpoint, an https:// (or http://) URL"
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
        self._urlencode = urlencode
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
        good = self._token is not None and now < self._expires_at
        if good and now < self._renew_at:
            return self._token  # type: ignore[return-value]
        if self._fetching is None:  # one fetch for every login waiting on it
            self._fetching = asyncio.get_running_loop().create_task(self._fetch())
            self._fetching.add_done_callback(_noted)
        if good:  # renewed in the background: this login goes on with the current one
            return self._token  # type: ignore[return-value]
        await asyncio.shield(self._fetching)
        assert self._token is not None
        return self._token

    async def _fetch(self) -> None:
        try:
            status, body = await asyncio.to_thread(
                self._post, self.url, self._form(), self._headers(), self._timeout_s
            )
        except TokenEndpointError:
            raise
        except Exception as exc:  # (OSError, http.client's, a bad URL): said in one line
            raise TokenEndpointError(f"token endpoint {self.url}: {exc!r}") from None
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
        client_id, secret = self._client_id, self._client_secret
        if self._urlencode:
            client_id, secret = urllib.parse.quote(client_id), urllib.parse.quote(secret)
        pair = f"{client_id}:{secret}"
        return {
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }


def _noted(fetch: asyncio.Task[None]) -> None:
    """A background renewal's failure: said once here (the next login tries again)."""
    if not fetch.cancelled() and fetch.exception() is not None:
        _log.warning("renewing the OAUTHBEARER token failed: %s", fetch.exception())


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _lifetime(answer: object, token: str, now: float) -> float:
    """Seconds the token lives: the answer's expires_in, else its JWT's exp (0: expired
    already, fetched again at the next login), else an hour (an opaque token)."""
    expires_in = _seconds(answer.get("expires_in") if isinstance(answer, dict) else None)
    if expires_in is not None and expires_in > 0:
        return expires_in
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        exp = _seconds(claims["exp"])
        if exp is not None:
            return max(exp - now, 0.0)
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

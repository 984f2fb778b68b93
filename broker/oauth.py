"""How a SASL listener checks OAUTHBEARER tokens (Kafka's KIP-255, KIP-768).

With ``sasl.oauthbearer.jwks.endpoint.url`` set, a token must be signed by one of the
identity provider's keys, read from that URL (:class:`JwksSource`): when first needed,
again every ``sasl.oauthbearer.jwks.endpoint.refresh.ms``, and at once for a token naming
a key not in the set (the provider rotated its keys): at most once per
:data:`_MISSING_KEY_REFETCH_S` for each such key, and :data:`_MIN_GAP_S` apart, so tokens
naming made-up keys do not make every login a read. A read that fails keeps the keys read
before (and is tried again at most every :data:`_MISSING_KEY_REFETCH_S`); with none yet,
logins fail with what went wrong, and the broker goes on serving everyone else.

Unset, the listener takes unsigned tokens (Kafka's default, its unsecured validator), with
the options of its OAUTHBEARER JAAS line: ``unsecuredValidatorPrincipalClaimName``,
``unsecuredValidatorScopeClaimName``, ``unsecuredValidatorRequiredScope`` and
``unsecuredValidatorAllowableClockSkewMs``. Anyone can write such a token: the broker
says so in its log at start.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Mapping

import structlog

from broker.config import BrokerConfig, ConfigError
from protocol.oauthbearer import Jwks, Token, check_signed, check_unsecured, token_key_id
from protocol.sasl import SaslError

__all__ = ["BearerChecker", "JwksSource"]

_log = structlog.get_logger("headwater.oauth")
_MISSING_KEY_REFETCH_S = 10.0
_MIN_GAP_S = 1.0
_MISSING_KEPT = 100
_FETCH_TIMEOUT_S = 10.0
_MAX_JWKS_BYTES = 1 << 20


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _read_url(url: str) -> bytes:
    """The JWKS document (blocking: called in a worker thread)."""
    with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as answer:
        data: bytes = answer.read(_MAX_JWKS_BYTES + 1)
    if len(data) > _MAX_JWKS_BYTES:
        raise SaslError(f"the JWKS at {url} is over {_MAX_JWKS_BYTES} bytes")
    return data


class JwksSource:
    """The identity provider's signing keys, read from a URL when needed."""

    def __init__(
        self,
        url: str,
        refresh_ms: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[str], bytes] = _read_url,
    ) -> None:
        self.url = url
        self._refresh_s = refresh_ms / 1000
        self._retry_s = min(_MISSING_KEY_REFETCH_S, self._refresh_s)
        self._clock = clock
        self._read = read
        self._keys: Jwks | None = None
        self._read_at: float | None = None
        self._tried_at: float | None = None
        self._reading: asyncio.Task[None] | None = None
        """The read in flight: its own task, so a login whose client goes away (its task
        cancelled) does not cancel the read the others wait for."""
        self._error = ""
        self._missing: dict[str, float] = {}
        """When each key id not in the set last made a read (the latest few)."""

    async def keys(self, kid: str | None = None) -> Jwks:
        """The key set, read again first if it is due, or lacks ``kid``; a read in
        flight is waited for (one at a time)."""
        if self._reading is None and self._should_read(kid):
            self._reading = asyncio.get_running_loop().create_task(self._read_now())
        if self._reading is not None:
            await asyncio.shield(self._reading)
        if self._keys is None:  # (the URL is in the broker's log, not told to clients)
            raise SaslError(f"the identity provider's keys cannot be read: {self._error}")
        return self._keys

    def _should_read(self, kid: str | None) -> bool:
        now = self._clock()
        tried = now - self._tried_at if self._tried_at is not None else None
        if self._read_at is None or now - self._read_at >= self._refresh_s:
            return tried is None or tried >= self._retry_s  # a provider down: not each login
        if kid is None or self._keys is None or kid in self._keys.keys:
            return False
        asked = self._missing.get(kid)
        if (tried is not None and tried < _MIN_GAP_S) or (
            asked is not None and now - asked < _MISSING_KEY_REFETCH_S
        ):
            return False
        self._missing.pop(kid, None)
        self._missing[kid] = now
        if len(self._missing) > _MISSING_KEPT:
            del self._missing[next(iter(self._missing))]
        return True

    async def _read_now(self) -> None:
        self._tried_at = self._clock()
        try:
            await self._read_keys()
        finally:
            self._reading = None

    async def _read_keys(self) -> None:
        try:
            data = await asyncio.to_thread(self._read, self.url)
            keys = Jwks.parse(data)
        except Exception as exc:  # whatever the provider did: logged, and logins told
            self._error = str(exc) or type(exc).__name__
            _log.warning(
                "oauth.jwks_unreadable",
                url=self.url,
                error=self._error,
                keeping=len(self._keys.keys) if self._keys else 0,
            )
            return
        if not keys.keys:
            self._error = "it holds no RSA or EC signing key"
            _log.warning("oauth.jwks_empty", url=self.url)
            return
        self._keys, self._read_at, self._error = keys, self._clock(), ""
        _log.info(
            "oauth.jwks_read",
            url=self.url,
            keys=sorted(str(k) for k in keys.keys),
            skipped=keys.skipped or None,
        )


class BearerChecker:
    """One listener's check of OAUTHBEARER tokens: signed (a JWKS) or unsecured."""

    def __init__(
        self, config: BrokerConfig, options: Mapping[str, str], keys: JwksSource | None
    ) -> None:
        self._keys = keys
        self._audience = tuple(config["sasl.oauthbearer.expected.audience"])
        self._issuer = config["sasl.oauthbearer.expected.issuer"]
        self._skew_ms = config["sasl.oauthbearer.clock.skew.seconds"] * 1000
        if keys is not None:
            self._principal = config["sasl.oauthbearer.sub.claim.name"]
            self._scope = config["sasl.oauthbearer.scope.claim.name"]
            self._required: tuple[str, ...] = ()
            return
        self._principal = options.get("unsecuredValidatorPrincipalClaimName", "sub")
        self._scope = options.get("unsecuredValidatorScopeClaimName", "scope")
        self._required = tuple(options.get("unsecuredValidatorRequiredScope", "").split())
        skew = options.get("unsecuredValidatorAllowableClockSkewMs", "0")
        if not skew.isdigit():
            raise ConfigError(
                f"unsecuredValidatorAllowableClockSkewMs={skew!r} in the OAUTHBEARER "
                "sasl.jaas.config: give a whole number of milliseconds"
            )
        self._skew_ms = int(skew)

    @property
    def signed(self) -> bool:
        return self._keys is not None

    async def check(self, token: str) -> Token:
        """The token's principal, expiry and scope; a SaslError says what is wrong."""
        if self._keys is None:
            return check_unsecured(
                token,
                _wall_ms(),
                principal_claim=self._principal,
                scope_claim=self._scope,
                required_scope=self._required,
                clock_skew_ms=self._skew_ms,
            )
        jwks = await self._keys.keys(token_key_id(token))
        return check_signed(
            token,
            jwks,
            _wall_ms(),
            expected_audience=self._audience,
            expected_issuer=self._issuer,
            principal_claim=self._principal,
            scope_claim=self._scope,
            clock_skew_ms=self._skew_ms,
        )

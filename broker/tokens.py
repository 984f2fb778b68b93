"""Delegation tokens (Kafka's KIP-48 and KIP-373, ZooKeeper mode): a short-lived SCRAM
login a user hands to its jobs, so the jobs never hold the user's own password.

A user logged in with a password or a certificate asks for a token
(CreateDelegationToken); the broker makes an id and its HMAC (HMAC-SHA512 of the id under
``delegation.token.secret.key``, which every broker shares, so every broker can check a
login), stores the token in ``/delegation_token/tokens/<id>`` (Kafka's JSON) with a
``/delegation_token/token_changes`` notification in the same multi, and answers with the
id and the HMAC. A client logs in with SCRAM as the id, the HMAC in base64 as the
password, and the extension ``tokenauth=true`` (Kafka's JAAS ``tokenauth="true"``); the
connection is then the token's owner's, until the token expires (its session ends
there, with ``connections.max.reauth.ms``).

A token expires at ``delegation.token.expiry.time.ms`` after it is made or renewed, and
never lives past its max (``delegation.token.max.lifetime.ms``, or less if asked). Its
owner, its requester and its renewers may renew it or expire it early; they and those
with DESCRIBE on it (or DESCRIBE_TOKENS on its owner) may see it. Tokens are not given
out on a connection logged in with a token (a token cannot breed tokens), nor on one with
no login (PLAINTEXT, TLS without a client certificate): Kafka's rules. Each broker keeps a
copy of every token (:class:`~broker.mirror.ZkMirror`), and deletes expired ones every
``delegation.token.expiry.check.interval.ms``.

Concurrency: event loop thread only; ZooKeeper through :class:`ZkBridge`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import unquote

from broker.authorizer import Authorizer, principal
from broker.config import BrokerConfig
from broker.mirror import ZkMirror
from broker.server import PEER_LOGIN
from broker.zk import (
    CREATE,
    CorruptZnode,
    NodeExists,
    NoNode,
    SessionState,
    VersionConflict,
    ZkBridge,
    ZkConnectionLoss,
    ZkError,
    paths,
)
from protocol.acls import Operation, ResourceType
from protocol.apis import (
    CreateDelegationTokenRequest,
    CreateDelegationTokenResponse,
    DescribedDelegationToken,
    DescribeDelegationTokenRequest,
    DescribeDelegationTokenResponse,
    ExpireDelegationTokenRequest,
    ExpireDelegationTokenResponse,
    RenewDelegationTokenRequest,
    RenewDelegationTokenResponse,
    TokenPrincipal,
)
from protocol.errors import (
    ApiError,
    DelegationTokenAuthDisabledError,
    DelegationTokenAuthorizationFailedError,
    DelegationTokenExpiredError,
    DelegationTokenNotFoundError,
    DelegationTokenOwnerMismatchError,
    DelegationTokenRequestNotAllowedError,
    InvalidPrincipalTypeError,
    KafkaStorageError,
)
from protocol.sasl import SCRAM_MECHANISMS, ScramCredential

__all__ = ["DelegationTokens", "TokenInfo", "token_hmac"]

TOKENS = "/delegation_token/tokens"
CHANGES = "/delegation_token/token_changes"
_CHANGE_PREFIX = f"{CHANGES}/token_change_"
_USER = "User"
_PURGE_AFTER_MS = 15 * 60 * 1000  # notifications older than this go (Kafka's)
_WRITE_TRIES = 5

LOGINS_ALLOWED_TOKENS = frozenset({"sasl", "certificate"})
"""How a connection must have logged in to be given tokens (see :data:`PEER_LOGIN`)."""


def token_hmac(secret: str, token_id: str) -> bytes:
    """A token's HMAC: what its holder proves it has (Kafka's HmacSHA512 of the id)."""
    return hmac.new(secret.encode(), token_id.encode(), hashlib.sha512).digest()


def new_token_id() -> str:
    """Kafka's: a random UUID in URL-safe base64, unpadded (22 characters)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


@dataclasses.dataclass(frozen=True, slots=True)
class TokenInfo:
    """One token, as Kafka stores it (``TokenInformation``). Principals in Kafka's text
    form, ``User:alice``; times in wall-clock ms."""

    token_id: str
    owner: str
    requester: str
    renewers: tuple[str, ...]
    issue_ms: int
    expiry_ms: int
    max_ms: int

    def to_json(self) -> bytes:
        """Kafka's znode (DelegationTokenManagerZk): principals URL-encoded by its
        Sanitizer (``User%3Aalice``)."""
        return json.dumps(
            {
                "version": 3,
                "owner": paths.sanitize(self.owner),
                "tokenRequester": paths.sanitize(self.requester),
                "renewers": [paths.sanitize(r) for r in self.renewers],
                "issueTimestamp": self.issue_ms,
                "maxTimestamp": self.max_ms,
                "expiryTimestamp": self.expiry_ms,
                "tokenId": self.token_id,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, path: str, data: bytes) -> TokenInfo:
        try:
            value = json.loads(data)
            owner = unquote(str(value["owner"]))
            requester = value.get("tokenRequester")
            return cls(
                token_id=str(value["tokenId"]),
                owner=owner,
                requester=unquote(str(requester)) if requester else owner,  # v1-2: the owner
                renewers=tuple(unquote(str(r)) for r in value.get("renewers") or ()),
                issue_ms=int(value["issueTimestamp"]),
                expiry_ms=int(value["expiryTimestamp"]),
                max_ms=int(value["maxTimestamp"]),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptZnode(f"{path} is not a delegation token: {exc!r}") from None

    def may_renew(self, who: str) -> bool:
        """Kafka's: its owner, its requester, or one of its renewers."""
        return who in (self.owner, self.requester) or who in self.renewers

    def expired(self, now_ms: int) -> bool:
        return now_ms > self.expiry_ms or now_ms > self.max_ms


@dataclasses.dataclass(frozen=True, slots=True)
class TokenLogin:
    """What a SCRAM login with a token needs: the credential to check, and who it is."""

    credential: ScramCredential
    owner: str
    expiry_ms: int


def _principal(p: TokenPrincipal) -> str:
    if p.principal_type != _USER:
        raise InvalidPrincipalTypeError(
            f"{p.principal_type}:{p.principal_name}: a token's owner and renewers are users "
            f"({_USER}:<name>)"
        )
    return f"{_USER}:{p.principal_name}"


def _split(who: str) -> tuple[str, str]:
    kind, _, name = who.partition(":")
    return kind, name


def _people(token: TokenInfo) -> dict[str, Any]:
    """The owner and requester fields of a token's answers (Kafka's split principals)."""
    owner_type, owner_name = _split(token.owner)
    requester_type, requester_name = _split(token.requester)
    return {
        "principal_type": owner_type,
        "principal_name": owner_name,
        "token_requester_principal_type": requester_type,
        "token_requester_principal_name": requester_name,
    }


def _sequence(name: str) -> int:
    """The sequence number of ``token_change_0000000042``; -1 for a stranger."""
    digits = name.removeprefix(_CHANGE_PREFIX.rsplit("/", 1)[1])
    return int(digits) if digits.isdigit() else -1


def _wall_ms() -> int:
    return int(time.time() * 1000)


class DelegationTokens(ZkMirror):
    """Every token, kept current from ZooKeeper; the four APIs; token logins."""

    def __init__(self, zk: ZkBridge | None, config: BrokerConfig, acl: Authorizer) -> None:
        super().__init__(zk, "delegation_token", config.broker_id)
        self._secret: str = config["delegation.token.secret.key"]
        self._max_lifetime_ms: int = config["delegation.token.max.lifetime.ms"]
        self._renew_ms: int = config["delegation.token.expiry.time.ms"]
        self._check_ms: int = config["delegation.token.expiry.check.interval.ms"]
        self._acl = acl
        self._tokens: dict[str, TokenInfo] = {}
        self._by_hmac: dict[bytes, str] = {}
        self._logins: dict[tuple[str, str], TokenLogin] = {}  # (id, mechanism): made once
        self._sweeper: asyncio.Task[None] | None = None
        self._last_sequence = -1  # the last change notification read
        self._whole_needed = True  # the next pass reads every token

    @property
    def enabled(self) -> bool:
        """A secret is set (Kafka's delegation.token.secret.key): tokens can be made and
        checked. Without one, every token API answers DELEGATION_TOKEN_AUTH_DISABLED."""
        return bool(self._secret)

    async def start(self) -> None:
        if not self.enabled:
            return
        await super().start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await super().stop()

    # --- the copy -------------------------------------------------------------------------

    async def reload(self) -> None:
        """Bring the copy up to date: the tokens the notifications since the last pass
        name, each read again (Kafka's: a change costs its own token's read, not every
        token's); every token at the start, after a new ZooKeeper session, and when a
        notification went (purged) before it was read."""
        assert self._zk is not None
        async with self._reading:
            await self._zk.ensure_path(CHANGES)
            await self._zk.ensure_path(TOKENS)
            names = await self._zk.get_children(CHANGES, watch=self.on_watch)
            newest = max((_sequence(n) for n in names), default=self._last_sequence)
            fresh = sorted(n for n in names if _sequence(n) > self._last_sequence)
            # numbered anew (the parent made again: its sequence starts over): the ones
            # below the last read may be new, so everything is read
            whole = self._whole_needed or (bool(names) and newest < self._last_sequence)
            self._whole_needed = False  # (a session reported during this pass asks again)
            changed: set[str] | None = None
            if not whole:
                changed = set()
                for name in fresh:
                    try:
                        data, _ = await self._zk.get(f"{CHANGES}/{name}")
                    except NoNode:  # purged before we read it: read everything
                        changed = None
                        break
                    changed.add(data.decode(errors="replace"))
            if changed is None:
                listed = await self._zk.get_children(TOKENS)
                tokens = {t: token for t in listed if (token := await self._read_copy(t))}
            else:
                tokens = dict(self._tokens)
                for token_id in changed:
                    token = await self._read_copy(token_id)
                    if token is None:
                        tokens.pop(token_id, None)
                    else:
                        tokens[token_id] = token
            self._last_sequence = newest if whole else max(newest, self._last_sequence)
            self._install(tokens)

    async def _read_copy(self, token_id: str) -> TokenInfo | None:
        """A token for the copy (None: gone, or unreadable: logged)."""
        assert self._zk is not None
        path = f"{TOKENS}/{token_id}"
        try:
            data, _ = await self._zk.get(path)
            token = TokenInfo.from_json(path, data)
        except NoNode:
            return None  # expired and deleted since it was named
        except CorruptZnode as exc:
            self._log.warning("delegation_token.unreadable", error=str(exc))
            return None
        return token if token.token_id == token_id else None

    def _on_session(self, state: str) -> None:
        if state == SessionState.CONNECTED:  # what was missed meanwhile: all read again
            self._whole_needed = True
        super()._on_session(state)

    def _install(self, tokens: dict[str, TokenInfo]) -> None:
        if tokens.keys() != self._tokens.keys():
            self._log.info("delegation_token.loaded", tokens=len(tokens))
        self._tokens = tokens
        known = {t: h for h, t in self._by_hmac.items()}  # (an HMAC is made once per token)
        self._by_hmac = {known.get(t) or token_hmac(self._secret, t): t for t in tokens}
        # a token renewed keeps its credential; one gone takes it along
        self._logins = {k: v for k, v in self._logins.items() if k[0] in tokens}

    # --- logins ---------------------------------------------------------------------------

    def login(self, token_id: str, mechanism: str) -> TokenLogin | None:
        """The SCRAM credential of a token that can log in now (None: no such token,
        expired, or tokens disabled). Its password is the HMAC in base64, as Kafka's."""
        token = self._tokens.get(token_id) if self.enabled else None
        if token is None or token.expired(_wall_ms()) or mechanism not in SCRAM_MECHANISMS:
            return None
        found = self._logins.get((token_id, mechanism))
        if found is None or found.expiry_ms != min(token.expiry_ms, token.max_ms):
            password = base64.b64encode(token_hmac(self._secret, token_id)).decode()
            found = TokenLogin(
                ScramCredential.make(mechanism, password) if found is None else found.credential,
                token.owner,
                min(token.expiry_ms, token.max_ms),
            )
            self._logins[(token_id, mechanism)] = found
        return found

    # --- the APIs -------------------------------------------------------------------------

    def _allowed(self) -> None:
        """Kafka's checks, in its order: the connection's login, then tokens being on."""
        if PEER_LOGIN.get() not in LOGINS_ALLOWED_TOKENS:
            how = "a delegation token" if PEER_LOGIN.get() == "token" else "no login"
            raise DelegationTokenRequestNotAllowedError(
                f"this connection is logged in with {how}: ask for tokens on a connection "
                "logged in with SASL (a password) or a TLS client certificate"
            )
        if not self.enabled:
            raise DelegationTokenAuthDisabledError(
                "delegation tokens are off on this broker: set delegation.token.secret.key "
                "(the same on every broker) to use them"
            )

    async def create(self, request: CreateDelegationTokenRequest) -> CreateDelegationTokenResponse:
        try:
            self._allowed()
            requester = principal()
            owner = requester
            if request.owner_principal_name:
                owner = _principal(
                    TokenPrincipal(
                        principal_type=request.owner_principal_type or "",
                        principal_name=request.owner_principal_name,
                    )
                )
                if owner != requester and not self._acl.allowed(
                    Operation.CREATE_TOKENS, ResourceType.USER, owner
                ):
                    raise DelegationTokenAuthorizationFailedError(
                        f"{requester} may not create tokens for {owner}: it needs "
                        f"CREATE_TOKENS on User resource {owner}"
                    )
            renewers = tuple(_principal(r) for r in request.renewers)
            now = _wall_ms()
            lifetime = self._max_lifetime_ms
            if request.max_lifetime_ms > 0:
                lifetime = min(request.max_lifetime_ms, lifetime)
            token = TokenInfo(
                token_id=new_token_id(),
                owner=owner,
                requester=requester,
                renewers=renewers,
                issue_ms=now,
                max_ms=now + lifetime,
                expiry_ms=min(now + lifetime, now + self._renew_ms),
            )
            await self._write(token, CREATE)
        except ApiError as exc:
            return CreateDelegationTokenResponse(error_code=exc.code, error_message=exc.message)
        self._log.info(
            "delegation_token.created",
            token_id=token.token_id,
            owner=owner,
            requester=requester,
            renewers=list(renewers),
        )
        await self.catch_up()
        return CreateDelegationTokenResponse(
            **_people(token),
            issue_timestamp_ms=token.issue_ms,
            expiry_timestamp_ms=token.expiry_ms,
            max_timestamp_ms=token.max_ms,
            token_id=token.token_id,
            hmac=token_hmac(self._secret, token.token_id),
        )

    async def renew(self, request: RenewDelegationTokenRequest) -> RenewDelegationTokenResponse:
        try:
            expiry = await self._change(request.hmac, request.renew_period_ms, renew=True)
        except ApiError as exc:
            return RenewDelegationTokenResponse(error_code=exc.code, error_message=exc.message)
        return RenewDelegationTokenResponse(expiry_timestamp_ms=expiry)

    async def expire(self, request: ExpireDelegationTokenRequest) -> ExpireDelegationTokenResponse:
        try:
            expiry = await self._change(request.hmac, request.expiry_time_period_ms, renew=False)
        except ApiError as exc:
            return ExpireDelegationTokenResponse(error_code=exc.code, error_message=exc.message)
        return ExpireDelegationTokenResponse(expiry_timestamp_ms=expiry)

    async def _change(self, token_hmac_: bytes, period_ms: int, *, renew: bool) -> int:
        """Renew (``period_ms`` from now, -1: the default) or expire (``period_ms`` from
        now, negative: at once, the token deleted) the token whose HMAC is given; its new
        expiry. Decided on the token as ZooKeeper holds it, written at the version read:
        another broker's change this one has not heard of yet is never written over."""
        self._allowed()
        token_id = self._by_hmac.get(bytes(token_hmac_))
        if token_id is None:  # made on another broker a moment ago, perhaps
            await self.catch_up()
            token_id = self._by_hmac.get(bytes(token_hmac_))
        if token_id is None:
            raise DelegationTokenNotFoundError("no delegation token has this HMAC")
        who = principal()
        for _ in range(_WRITE_TRIES):
            read = await self._read(token_id)
            if read is None:
                raise DelegationTokenNotFoundError("no delegation token has this HMAC")
            token, version = read
            if not token.may_renew(who):
                raise DelegationTokenOwnerMismatchError(
                    f"{who} is not the owner, the requester or a renewer of token {token_id}"
                )
            now = _wall_ms()
            changed: TokenInfo | None = None
            if not renew and period_ms < 0:  # (Kafka's: before the expiry check)
                expiry = now
            elif token.expired(now):
                raise DelegationTokenExpiredError(f"token {token_id} has expired")
            else:
                period = self._renew_ms if renew and period_ms < 0 else period_ms
                expiry = min(token.max_ms, now + period)
                changed = dataclasses.replace(token, expiry_ms=expiry)
            try:
                await self._write(changed or token, version, delete=changed is None)
            except (VersionConflict, NoNode):
                continue  # changed under us: read again, and decide again
            self._log.info(
                "delegation_token.renewed" if renew else "delegation_token.expired",
                token_id=token_id,
                expiry_ms=expiry,
                by=who,
            )
            await self.catch_up()
            return expiry
        raise KafkaStorageError("the token kept changing under us; try again")

    async def _read(self, token_id: str) -> tuple[TokenInfo, int] | None:
        """The token as ZooKeeper holds it now, and its version (None: gone)."""
        assert self._zk is not None
        path = f"{TOKENS}/{token_id}"
        try:
            data, stat = await self._zk.get(path)
            return TokenInfo.from_json(path, data), stat.version
        except NoNode:
            return None
        except ZkError as exc:  # (CorruptZnode too)
            raise KafkaStorageError(f"reading token {token_id} failed: {exc}") from None

    async def describe(
        self, request: DescribeDelegationTokenRequest
    ) -> DescribeDelegationTokenResponse:
        try:
            self._allowed()
        except ApiError as exc:
            return DescribeDelegationTokenResponse(error_code=exc.code, error_message=exc.message)
        if request.owners is not None and not request.owners:
            return DescribeDelegationTokenResponse()  # Kafka's: an empty list asks for none
        owners = (
            None
            if request.owners is None
            else {f"{o.principal_type}:{o.principal_name}" for o in request.owners}
        )
        who = principal()
        tokens = []
        for token in sorted(self._tokens.values(), key=lambda t: t.issue_ms):
            if owners is not None and not any(map(token.may_renew, owners)):
                continue  # (Kafka's: one of them is its owner, requester or a renewer)
            if not self._may_see(who, token):
                continue
            tokens.append(
                DescribedDelegationToken(
                    **_people(token),
                    issue_timestamp=token.issue_ms,
                    expiry_timestamp=token.expiry_ms,
                    max_timestamp=token.max_ms,
                    token_id=token.token_id,
                    hmac=token_hmac(self._secret, token.token_id),
                    renewers=[
                        TokenPrincipal(principal_type=k, principal_name=n)
                        for k, n in map(_split, token.renewers)
                    ],
                )
            )
        return DescribeDelegationTokenResponse(tokens=tokens)

    def _may_see(self, who: str, token: TokenInfo) -> bool:
        """Kafka's: its owner, requester and renewers; DESCRIBE on the token; or
        DESCRIBE_TOKENS on its owner (KIP-373)."""
        return (
            token.may_renew(who)
            or self._acl.allowed(Operation.DESCRIBE, ResourceType.DELEGATION_TOKEN, token.token_id)
            or self._acl.allowed(Operation.DESCRIBE_TOKENS, ResourceType.USER, token.owner)
        )

    # --- writing, expiring ----------------------------------------------------------------

    async def _write(self, token: TokenInfo, version: int, *, delete: bool = False) -> None:
        """The token's znode (made, set at ``version``, or deleted) with its change
        notification, in one multi."""
        assert self._zk is not None
        path = f"{TOKENS}/{token.token_id}"
        lost = False  # a write's answer was lost with the connection
        for _ in range(3):
            try:
                await self._zk.write_and_notify(
                    path,
                    token.to_json(),
                    version=version,
                    notice_prefix=_CHANGE_PREFIX,
                    notice=token.token_id.encode(),
                    delete=delete,
                )
                return
            except NoNode:
                if lost and delete:
                    return  # deleted by the write whose answer was lost
                if version != CREATE:
                    raise
                try:  # (a parent gone: made, then again)
                    await self._zk.ensure_path(TOKENS)
                    await self._zk.ensure_path(CHANGES)
                except ZkError as exc:
                    raise KafkaStorageError(f"writing the token failed: {exc}") from None
            except NodeExists:  # a 128-bit random id taken: not in this universe
                if lost and await self._made(path, token, delete=False):
                    return  # made by the write whose answer was lost
                raise KafkaStorageError("a token id clashed; try again") from None
            except VersionConflict:
                raise
            except ZkConnectionLoss:  # its answer lost: the znode says whether it was made
                lost = True
                if await self._made(path, token, delete=delete):
                    return
            except ZkError as exc:
                raise KafkaStorageError(f"writing the token failed: {exc}") from None
        raise KafkaStorageError(
            "the token could not be written (its parent znodes kept vanishing, or the "
            "connection to ZooKeeper kept dropping); try again"
        )

    async def _made(self, path: str, token: TokenInfo, *, delete: bool) -> bool:
        """Whether a write of ``token`` whose answer was lost with the connection to
        ZooKeeper was made: its znode holds the token's bytes (a new token's id is drawn
        at random), or is gone for a deletion. Not made, it is sent again: a version
        moved meanwhile is refused then, as a conflict."""
        assert self._zk is not None
        try:
            data = await self._zk.read_back(path)
        except ZkError as exc:
            raise KafkaStorageError(f"writing the token failed: {exc}") from None
        return delete if data is None else not delete and data == token.to_json()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._check_ms / 1000)
            try:
                await self.sweep()
            except ZkError as exc:
                self._log.warning("delegation_token.sweep_failed", error=str(exc))
            except Exception:  # our bug: logged loudly; the next sweep still runs
                self._log.exception("delegation_token.sweep_failed")

    async def sweep(self, now_ms: int | None = None) -> list[str]:
        """Delete the expired tokens (every broker does; the first one wins) and change
        notifications older than 15 minutes; the ids deleted."""
        assert self._zk is not None
        now = _wall_ms() if now_ms is None else now_ms
        gone = []
        for token_id, token in list(self._tokens.items()):
            if not token.expired(now):
                continue
            # as ZooKeeper holds it: renewed on another broker a moment ago, it stays
            try:
                read = await self._read(token_id)
            except KafkaStorageError as exc:
                self._log.warning("delegation_token.sweep_failed", error=exc.message)
                break
            if read is None or not read[0].expired(now):
                continue
            try:
                await self._write(read[0], read[1], delete=True)
            except (NoNode, VersionConflict):
                continue  # another broker deleted or renewed it first
            except KafkaStorageError as exc:  # ZooKeeper away: the next sweep
                self._log.warning("delegation_token.sweep_failed", error=exc.message)
                break
            gone.append(token_id)
            self._log.info("delegation_token.removed_expired", token_id=token_id)
        for name in sorted(await self._zk.get_children(CHANGES)):
            path = f"{CHANGES}/{name}"
            stat = await self._zk.exists(path)
            if stat is None:
                continue
            if now - stat.ctime < _PURGE_AFTER_MS:
                break  # the rest are younger
            with contextlib.suppress(NoNode):
                await self._zk.delete(path)
        if gone:
            await self.catch_up()
        return gone

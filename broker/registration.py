"""A broker's membership of the cluster: the cluster id and ``/brokers/ids/<id>``.

The registration znode is ephemeral: it lives exactly as long as the broker's ZooKeeper
session, which is how the controller learns that a broker died. A broker refuses to start
if its id is registered by another live session, except at its own address: that is its
own last run, killed before its session expired, and the start waits for the session to
go (KAFKA-7165). After a session expiry (LOST) the old
znode is gone with the old session, and the registrar registers again on the new one;
the new znode's czxid is the broker's new epoch.

Concurrency: one task per registrar re-registers; callbacks from the bridge only wake it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid

import structlog

from broker.zk import (
    BrokerRegistration,
    CorruptZnode,
    NodeExists,
    NoNode,
    SessionState,
    VersionConflict,
    ZkBridge,
    ZkError,
    cluster_id_from_json,
    cluster_id_json,
    paths,
)
from protocol.errors import HeadwaterError

__all__ = [
    "BrokerIdInUseError",
    "BrokerRegistrar",
    "get_or_create_cluster_id",
    "stale_registration_wait_s",
]

_RETRY_S = 0.5
_TAKEN_RETRY_S = 2.0
"""Between looks at our id held by another broker (see ``_keep_registered``)."""


class BrokerIdInUseError(HeadwaterError):
    """Another live broker holds this broker id."""


def stale_registration_wait_s(session_timeout_s: float) -> float:
    """How long a start waits for its own last run's registration to go: that run's
    session timeout is not known here (ZooKeeper negotiates each into [2, 20] ticks, 4 to
    40 s at its default tickTime of 2 s, and expires it up to a tick late; the dead run
    may have been configured otherwise), so a session timeout of ours and a half, and at
    least 45 s. Only a misconfiguration (another live broker of this id advertising our
    very address) waits it out before it is refused."""
    return max(session_timeout_s * 1.5 + 2, 45.0)


def new_cluster_id() -> str:
    """22 URL-safe characters from a random UUID, as Kafka makes them."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


async def get_or_create_cluster_id(zk: ZkBridge) -> str:
    """The cluster's id from ``/cluster/id``, created by whichever broker gets there first."""
    try:
        return cluster_id_from_json((await zk.get(paths.CLUSTER_ID))[0])
    except NoNode:
        pass
    with contextlib.suppress(NodeExists):  # another broker won the race: its id it is
        await zk.create(paths.CLUSTER_ID, cluster_id_json(new_cluster_id()), makepath=True)
    return cluster_id_from_json((await zk.get(paths.CLUSTER_ID))[0])


class BrokerRegistrar:
    """Keeps ``/brokers/ids/<id>`` registered for as long as it runs."""

    def __init__(
        self,
        zk: ZkBridge,
        registration: BrokerRegistration,
        *,
        stale_wait_s: float | None = None,
    ) -> None:
        self._zk = zk
        self.registration = registration
        self._stale_wait_s = stale_wait_s
        self.waiting_for_stale = False
        """Waiting for a dead run's registration at our address to expire: requests the
        controller still sends to that run reach us meanwhile (see broker.app)."""
        self.creating = False
        """A create of our registration is under way: a request stamped with its epoch may
        come before the answer does (see broker.app)."""
        self.registered = asyncio.Event()
        """Set once the first registration's epoch is known."""
        self.epoch = -1
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("headwater.registration").bind(
            broker_id=registration.broker_id
        )

    @property
    def path(self) -> str:
        return paths.broker(self.registration.broker_id)

    async def register(self) -> int:
        """Register now (refusing a live duplicate), then keep registered after expiries."""
        await self._register_first()
        self._zk.on_state_change(self._on_state)
        self._task = asyncio.get_running_loop().create_task(self._keep_registered())
        return self.epoch

    async def deregister(self) -> None:
        """Remove our registration (a clean stop); the controller sees the broker leave.

        Only a znode of our own session is removed: after a refused start the znode is
        the other, live broker's.
        """
        if self._task is not None:
            self._task.cancel()
            self._task = None
        stat = await self._zk.exists(self.path)
        if stat is None or stat.ephemeralOwner != self._zk.session_id:
            return
        with contextlib.suppress(NoNode, VersionConflict):
            await self._zk.delete(self.path, version=stat.version)

    async def _register_first(self) -> None:
        """Register, waiting out a registration of this broker's own last run: one at our
        very address (where we listen now, so nothing else serves there) is a broker of
        this id that died (kill -9, a crash) and was restarted before ZooKeeper expired
        its session. Kafka waits for that session too (KAFKA-7165); refusing made an
        immediate restart fail. A registration elsewhere, or one still there after a
        session timeout and a half, is another live broker: refused."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        try:
            while True:
                try:
                    await self._register_once()
                    return
                except BrokerIdInUseError:
                    holder = await self._holder_address()
                    here = f"{self.registration.host}:{self.registration.port}"
                    if holder is not None and holder != here:
                        raise
                    if deadline is None:
                        wait_s = self._stale_wait_s
                        if wait_s is None:
                            wait_s = stale_registration_wait_s(self._zk.session_timeout_s)
                        deadline = loop.time() + wait_s
                        self.waiting_for_stale = True
                        self._log.warning(
                            "broker.waiting_for_stale_registration",
                            address=here,
                            max_wait_s=round(wait_s, 1),
                            why="a previous run of this broker left its registration "
                            "behind; ZooKeeper removes it when that run's session expires",
                        )
                    elif loop.time() >= deadline:
                        raise
                    await asyncio.sleep(_RETRY_S)
        finally:
            self.waiting_for_stale = False

    async def _holder_address(self) -> str | None:
        """host:port of the registration holding our id; None if unknown for now (gone
        meanwhile, or ZooKeeper did not answer: asked again), "" if unreadable."""
        try:
            data, _ = await self._zk.get(self.path)
        except (NoNode, ZkError):
            return None
        try:
            holder = BrokerRegistration.from_json(self.registration.broker_id, data)
        except (CorruptZnode, ValueError, KeyError, TypeError):
            return ""
        return f"{holder.host}:{holder.port}"

    async def _register_once(self) -> None:
        payload = self.registration.to_json(time.time_ns() // 1_000_000)
        self.creating = True
        try:
            stat = await self._zk.create_for_stat(self.path, payload, ephemeral=True, makepath=True)
        except NodeExists:
            stat = await self._zk.exists(self.path)
            if stat is None or stat.ephemeralOwner != self._zk.session_id:
                self.creating = False
                holder = await self._holder()
                raise BrokerIdInUseError(
                    f"broker id {self.registration.broker_id} is already registered by a live "
                    f"broker{holder}; stop it, or give this broker another broker.id"
                ) from None
        except ZkError:
            # the create may have landed, its answer lost: still "creating" (a request
            # stamped with the new epoch waits, a refusal of ours is retried) until a look
            # at the znode says (see _keep_registered)
            raise
        except BaseException:
            self.creating = False
            raise
        self._took(stat.czxid)

    def _took(self, czxid: int) -> None:
        """Our registration is the znode made in transaction ``czxid``."""
        self.creating = False
        if czxid != self.epoch:
            self.epoch = czxid  # the broker epoch the controller stamps on its requests
            self._log.info("broker.registered", epoch=self.epoch)
        self.registered.set()

    async def _holder(self) -> str:
        try:
            data, _ = await self._zk.get(self.path)
            other = BrokerRegistration.from_json(self.registration.broker_id, data)
            return f" at {other.host}:{other.port}"
        except ZkError:
            return ""

    def _on_state(self, state: str) -> None:
        if state == SessionState.LOST:
            self._log.warning("broker.session_lost")
        elif state == SessionState.CONNECTED:
            self._wake.set()  # after a reconnect, make sure we are (still) registered

    async def _keep_registered(self) -> None:
        """Register again after a session expiry (ZooKeeper removed our znode with the
        session). A znode there of another session is not ours: a reconnect within the
        session keeps ours, so it is another broker given our id meanwhile. That is said
        once, as an error (the cluster now sends our partitions' requests there), and
        looked at again every few seconds, until it goes."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            told: str | None = None
            while True:
                try:
                    stat = await self._zk.exists(self.path)
                    if stat is None:
                        await self._register_once()
                        break
                    if stat.ephemeralOwner == self._zk.session_id:
                        # ours: made by a create whose answer was lost (a retried
                        # ConnectionLoss), so its epoch was not taken from that answer
                        self._took(stat.czxid)
                        break
                except BrokerIdInUseError:
                    pass  # another session's znode, as below
                except ZkError as exc:  # (a create's answer lost: still creating, see there)
                    self._log.info("broker.register_retry", error=str(exc))
                    await asyncio.sleep(_RETRY_S)
                    continue
                self.creating = False
                # Not ours. Our last session's znode went with it (ZooKeeper removes a
                # session's ephemerals as it expires), so another broker holds our id, even
                # one at our address (a copied config, "localhost" on two machines)
                holder = await self._holder_address()
                if holder is None:
                    await asyncio.sleep(_RETRY_S)  # gone meanwhile, or no answer: look again
                    continue
                if holder != told:
                    told = holder
                    at = f"at {holder}" if holder else "(its registration is unreadable)"
                    self._log.error(
                        "broker.id_taken",
                        holder=holder,
                        error=f"broker id {self.registration.broker_id} is registered by "
                        f"another broker {at}; this broker is out of the cluster until it "
                        "stops: stop one of them, or give it another broker.id",
                    )
                await asyncio.sleep(_TAKEN_RETRY_S)

"""Controller election through the ephemeral ``/controller`` znode, as Kafka does with ZK.

Every broker runs an election. Whoever creates ``/controller`` (ephemeral: it dies with
its session) is the controller, and bumps ``/controller_epoch`` with compare-and-set; the
epoch fences requests from an older controller. The others watch ``/controller`` and try
again when it disappears. A controller whose session is lost resigns at once (it can no
longer prove it is the controller) and runs for election again on the new session.

A session's loss can be told after this broker has already won on its next session (the
election it was retrying went through first): the controller resigns only if the session
that was lost is the one that created its ``/controller`` (ZkBridge tells which session
ended; its current session id says nothing between connections). And a ``/controller``
that names this broker on its live session but is not the term it acts on is given up,
so that an election runs: either would otherwise leave the cluster without a controller
for as long as this broker's session lives (found by the soak: two minutes, no leader
moved).

Concurrency: watches and session changes only put a wake-up into one queue; one task
drains it and does all ZooKeeper work, so elections never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from broker.zk import (
    NodeExists,
    NoNode,
    SessionState,
    VersionConflict,
    ZkBridge,
    ZkError,
    controller_from_json,
    controller_json,
    paths,
)

__all__ = ["ControllerElection"]

OnElected = Callable[[int], Awaitable[None]]
OnResigned = Callable[[], Awaitable[None]]

_RETRY_S = 0.5


class ControllerElection:
    """Runs this broker's candidacy; ``on_elected(epoch)`` / ``on_resigned()`` tell the rest."""

    def __init__(
        self, zk: ZkBridge, broker_id: int, on_elected: OnElected, on_resigned: OnResigned
    ) -> None:
        self._zk = zk
        self.broker_id = broker_id
        self._on_elected = on_elected
        self._on_resigned = on_resigned
        self.controller_id = -1
        self.epoch = -1
        self._owner: int | None = None
        """The session that created ``/controller`` when this broker won."""
        self._lost: set[int | None] = set()
        """Sessions lost since the last event was taken (None: one whose id was unknown)."""
        self._woken = asyncio.Event()
        """Set by a lost session: it cuts an election retry's pause short."""
        self._events: asyncio.Queue[str] = asyncio.Queue(maxsize=16)
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("headwater.controller").bind(broker_id=broker_id)

    @property
    def is_controller(self) -> bool:
        return self.controller_id == self.broker_id

    async def start(self) -> None:
        self._zk.on_state_change(self._on_state)
        self._zk.on_session_lost(self._on_lost)
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._enqueue("check")

    async def stop(self) -> None:
        """Stop running; a controller gives up ``/controller`` so another takes over now."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.is_controller:
            with contextlib.suppress(ZkError):  # it goes with our session anyway
                await self._zk.delete(paths.CONTROLLER)
            await self._resign()

    def _enqueue(self, event: str) -> None:
        if not self._events.full():  # a pending "check" already covers a new one
            self._events.put_nowait(event)

    def _on_state(self, state: str) -> None:
        # SUSPENDED: the session may yet live (and /controller with it): wait and see.
        # LOST: see _on_lost, which knows which session it was.
        if state == SessionState.CONNECTED:
            self._enqueue("check")

    def _on_lost(self, session: int | None) -> None:
        self._lost.add(session)
        self._woken.set()
        self._enqueue("resign")  # (if the queue is full, the next event looks at _lost)

    def _on_watch(self, event: object) -> None:
        self._enqueue("check")

    async def _run(self) -> None:
        while True:
            event = await self._events.get()
            await self._resign_if_lost()
            if event == "resign":
                continue
            while True:
                try:
                    await self._resign_if_lost()
                    await self._check()
                    break
                except ZkError as exc:
                    self._log.info("controller.election_retry", error=str(exc))
                    await self._pause()

    async def _pause(self) -> None:
        """:data:`_RETRY_S` before an election is tried again, or until a session is lost:
        a controller whose session went must stop saying it is controller at once (the
        soak: one answered Metadata as controller for the half second of this pause, and
        a client took its "no such topic" for the truth)."""
        self._woken.clear()
        if self._lost:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), _RETRY_S)

    async def _resign_if_lost(self) -> None:
        """Resign if the session this term was won on is among those lost."""
        lost, self._lost = self._lost, set()
        if self.is_controller and (self._owner in lost or None in lost or self._owner is None):
            self._log.warning("controller.resigning", reason="ZooKeeper session lost")
            await self._resign()
            self._enqueue("check")  # run again on the new session

    async def _check(self) -> None:
        """Become controller if there is none; otherwise learn who it is and watch it."""
        try:
            await self._zk.create(
                paths.CONTROLLER,
                controller_json(self.broker_id, time.time_ns() // 1_000_000),
                ephemeral=True,
            )
        except NodeExists:
            try:
                data, stat = await self._zk.get(paths.CONTROLLER, watch=self._on_watch)
            except NoNode:
                self._enqueue("check")  # it vanished between the two calls
                return
            current = controller_from_json(data)
            if current == self.broker_id and stat.ephemeralOwner != self._zk.session_id:
                return  # left by our expired session: ZooKeeper removes it, the watch fires
            if current == self.broker_id and (
                not self.is_controller or stat.ephemeralOwner != self._owner
            ):
                # ours, on this session, but not the term acted on: give it up, elect again
                self._log.warning("controller.abandoned_znode", session=stat.ephemeralOwner)
                if self.is_controller:
                    await self._resign()
                with contextlib.suppress(NoNode):
                    await self._zk.delete(paths.CONTROLLER)
                self._enqueue("check")
                return
            if current != self.broker_id and self.is_controller:
                await self._resign()
            self.controller_id = current
            return
        if self.is_controller:  # won again on a new session before its loss was told
            self._log.warning("controller.resigning", reason="ZooKeeper session lost")
            await self._resign()
        self.epoch = await self._bump_epoch()
        try:
            data, stat = await self._zk.get(paths.CONTROLLER, watch=self._on_watch)
        except NoNode:
            self._enqueue("check")  # gone with the session that made it
            return
        if controller_from_json(data) != self.broker_id:
            self._enqueue("check")  # ours went with its session, another broker won since
            return
        self._owner = stat.ephemeralOwner
        self.controller_id = self.broker_id
        self._log.info("controller.elected", epoch=self.epoch)
        await self._on_elected(self.epoch)

    async def _bump_epoch(self) -> int:
        while True:
            try:
                data, stat = await self._zk.get(paths.CONTROLLER_EPOCH)
            except NoNode:
                try:
                    await self._zk.create(paths.CONTROLLER_EPOCH, b"1")
                    return 1
                except NodeExists:
                    continue
            epoch = int(data) + 1
            try:
                await self._zk.set(
                    paths.CONTROLLER_EPOCH, str(epoch).encode(), version=stat.version
                )
                return epoch
            except VersionConflict:
                continue  # someone else bumped it; read again

    async def _resign(self) -> None:
        self.controller_id = -1
        await self._on_resigned()

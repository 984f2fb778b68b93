"""A broker's copy of some znodes, kept current: read whole before the broker serves,
then again on every watch that fires and every new ZooKeeper session (a session's
watches may be gone with it). What ACLs and client quotas are decided on.

A subclass reads in :meth:`ZkMirror.reload` (setting its watches with
:meth:`ZkMirror.on_watch` before it reads, so a change after a read always wakes another
pass) and swaps its copy whole. One task reloads; a failed pass is retried.

Concurrency: event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from broker.zk import SessionState, ZkBridge, ZkError

__all__ = ["ZkMirror"]

_RETRY_S = 1.0


class ZkMirror:
    """Keeps a copy current; ``await start()`` before serving, ``await stop()``."""

    def __init__(self, zk: ZkBridge | None, name: str, broker_id: int) -> None:
        self._zk = zk
        self._name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reading = asyncio.Lock()
        self._log = structlog.get_logger(f"headwater.{name}").bind(broker_id=broker_id)

    async def reload(self) -> None:
        """Read every znode of the copy and swap it whole (under :attr:`_reading`)."""
        raise NotImplementedError

    async def start(self) -> None:
        assert self._zk is not None
        await self.reload()
        self._zk.on_state_change(self._on_session)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def on_watch(self, _event: Any) -> None:
        """The watch callback: another pass soon."""
        self._wake.set()

    def _on_session(self, state: str) -> None:
        if state == SessionState.CONNECTED:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.reload()
            except ZkError as exc:
                self._log.warning(f"{self._name}.reload_retry", error=str(exc))
                await asyncio.sleep(_RETRY_S)
                self._wake.set()
            except Exception:  # our bug: logged loudly; the next change still runs
                self._log.exception(f"{self._name}.reload_failed")

    async def catch_up(self) -> None:
        """After writing: our own copy has the change before we answer; if ZooKeeper
        fails now, the change is made all the same (the watch brings it later)."""
        try:
            await self.reload()
        except ZkError as exc:
            self._log.warning(f"{self._name}.reload_after_change_failed", error=str(exc))
            self._wake.set()

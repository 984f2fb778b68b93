"""A response that is not ready yet, completed by an event in the same loop iteration.

A handler that has to wait (a fetch parked until data arrives) returns a
:class:`Deferred` instead of a coroutine. Whoever has the answer calls :meth:`resolve`
(or :meth:`fail`) and the listeners run right there, synchronously: the server writes the
response inside the call that produced it (the leader's append completes a parked fetch in
the produce's own stack), instead of one loop iteration per hop through asyncio futures
and tasks (Kafka's DelayedOperation completed by ``tryComplete`` on the appending thread).

Not thread-safe: loop thread only. Each is completed at most once; later calls are no-ops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Deferred"]

T = TypeVar("T")

_PENDING, _RESOLVED, _FAILED, _CANCELLED = range(4)


class Deferred(Generic[T]):
    __slots__ = ("_error", "_listeners", "_on_cancel", "_state", "_value")

    def __init__(self, on_cancel: Callable[[], None] | None = None) -> None:
        self._state = _PENDING
        self._value: T | None = None
        self._error: BaseException | None = None
        self._listeners: list[Callable[[Deferred[T]], None]] = []
        self._on_cancel = on_cancel
        """Called once if the waiting side gives up (its connection closed), so the
        completing side can forget it (and stop its timer). Dropped once done: it is
        usually bound to the operation that holds this Deferred, a cycle that only a full
        collection would free (a parked fetch held its whole fetch session that way)."""

    @property
    def done(self) -> bool:
        return self._state != _PENDING

    @property
    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def resolve(self, value: T) -> None:
        if self._state == _PENDING:
            self._state, self._value = _RESOLVED, value
            self._on_cancel = None
            self._notify()

    def fail(self, error: BaseException) -> None:
        if self._state == _PENDING:
            self._state, self._error = _FAILED, error
            self._on_cancel = None
            self._notify()

    def cancel(self) -> None:
        """The waiting side gives up: no listener runs; ``on_cancel`` does."""
        if self._state == _PENDING:
            self._state = _CANCELLED
            self._listeners = []
            on_cancel, self._on_cancel = self._on_cancel, None
            if on_cancel is not None:
                on_cancel()

    def result(self) -> T:
        """The value; raises the error it failed with (or CancelledError)."""
        if self._state == _RESOLVED:
            return self._value  # type: ignore[return-value]
        if self._state == _FAILED:
            assert self._error is not None
            raise self._error
        if self._state == _CANCELLED:
            raise asyncio.CancelledError()
        raise asyncio.InvalidStateError("the deferred is not done yet")

    def add_listener(self, listener: Callable[[Deferred[T]], None]) -> None:
        """Call ``listener(self)`` when completed (now, if it already is; never if
        cancelled)."""
        if self._state == _PENDING:
            self._listeners.append(listener)
        elif self._state != _CANCELLED:
            listener(self)

    def _notify(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener(self)

    def __await__(self) -> Generator[Any, None, T]:
        """For callers outside the server (and tests): await it like a future."""
        if not self.done:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.add_listener(lambda _: _set_once(future))
            try:
                yield from future.__await__()
            except asyncio.CancelledError:
                self.cancel()
                raise
        return self.result()


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

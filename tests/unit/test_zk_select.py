"""The poll(2)-based ``select`` the ZooKeeper bridge gives kazoo: select(2)'s answers."""

import socket

import pytest

from broker.zk import _PollHandler


def test_it_answers_as_select_does() -> None:
    handler = _PollHandler()
    a, b = socket.socketpair()
    try:
        assert handler.select([a], [], [], 0.01) == ([], [], [])  # nothing to read yet
        assert handler.select([a], [a], [], 0.01) == ([], [a], [])  # room to write
        b.send(b"x")
        assert handler.select([a, b.fileno()], [], [], 1) == ([a], [], [])
        assert handler.select([a], [a], [], 1) == ([a], [a], [])
        a.recv(1)
        b.close()  # the peer hung up: readable, and the read says so
        readable, _, _ = handler.select([a], [], [], 1)
        assert readable == [a] and a.recv(1) == b""
    finally:
        a.close()
        b.close()


def test_a_descriptor_closed_under_it_is_an_error_not_a_timeout() -> None:
    """poll(2) reports POLLNVAL: kazoo must drop the connection, not spin on "nothing"."""
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    try:
        with pytest.raises(OSError, match="not open"):
            _PollHandler().select([fd], [], [], 1)
    finally:
        b.close()

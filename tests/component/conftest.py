import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every component test runs on both loops: the broker runs on uvloop in production."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

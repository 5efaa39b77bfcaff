"""pytest fixtures for the doubles. Make them visible from ``tests/conftest.py`` with

    from tests.doubles.fixtures import (  # noqa: F401
        cloud_double, comfy_double, comfy_double_new, make_comfy_double,
    )

(or ``pytest_plugins = ["tests.doubles.fixtures"]`` in the root ``conftest.py``).
Every fixture is function-scoped: each test gets a fresh server, temp dir and port.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from .cloud import CloudDouble
from .comfy import ComfyDouble

__all__ = ["cloud_double", "comfy_double", "comfy_double_new", "make_comfy_double"]


@pytest.fixture
def comfy_double() -> Iterator[ComfyDouble]:
    """A fake ComfyUI 0.3.75 (no jobs API, no auth)."""
    with ComfyDouble() as double:
        yield double


@pytest.fixture
def comfy_double_new() -> Iterator[ComfyDouble]:
    """A fake newer ComfyUI: version 0.26.0 with the jobs API (UUID-only prompt ids, 409 on duplicates)."""
    with ComfyDouble(version="0.26.0", jobs_api=True) as double:
        yield double


@pytest.fixture
def make_comfy_double() -> Iterator[Callable[..., ComfyDouble]]:
    """Factory for doubles with other settings, e.g. ``make_comfy_double(token="s3cret")``; all are
    stopped at teardown."""
    started: list[ComfyDouble] = []

    def make(**kwargs) -> ComfyDouble:
        double = ComfyDouble(**kwargs).start()
        started.append(double)
        return double

    yield make
    for double in started:
        double.stop()


@pytest.fixture
def cloud_double() -> Iterator[CloudDouble]:
    """A fake Comfy Cloud account (API key ``test-key``) with its signed-URL storage. Teardown fails
    the test with AssertionError if the storage ever saw the API key."""
    with CloudDouble(api_key="test-key") as double:
        yield double

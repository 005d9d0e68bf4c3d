"""Fixtures shared by every test layer.

Real components only: ``etcd`` is a real etcd server, ``netns`` a real
network namespace, ``guest_image``/``qemu`` a real kernel booted under QEMU.
Each fixture removes exactly what it created.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.harness.etcd import EtcdServer


@pytest.fixture
def etcd() -> Iterator[EtcdServer]:
    """A fresh single-node etcd server for one test."""
    with EtcdServer() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_session() -> Iterator[EtcdServer]:
    """One etcd server shared by a whole session (tests must use own key prefixes)."""
    with EtcdServer(name="bmaas-session") as server:
        yield server


@pytest.fixture
async def etcd_client(etcd: EtcdServer) -> AsyncIterator[object]:
    """An aetcd client connected to the per-test etcd server."""
    import aetcd

    async with aetcd.Client(host=etcd.host, port=etcd.port) as client:
        yield client

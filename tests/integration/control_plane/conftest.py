"""Fixtures for the API contract tests: an in-process control plane on a
fresh etcd, generated-client stubs, and a small provisioned world (one
tenant with a token, an instance type, an image, registered hosts;
``tools.region.world``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from tools.region.control_plane import Clients, InProcessControlPlane
from tools.region.etcd import EtcdServer
from tools.region.world import World, build_world

_HERE = __file__.rsplit("/", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """grpc.aio binds its completion-queue poller to the first event loop it
    sees, so every gRPC test of this package runs on ONE session loop."""
    marker = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if is_async_test(item) and str(item.path).startswith(_HERE):
            item.add_marker(marker, append=False)


@pytest_asyncio.fixture(loop_scope="session")
async def cp(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    async with InProcessControlPlane(etcd, allow_fake_power=True) as plane:
        yield plane


@pytest_asyncio.fixture(loop_scope="session")
async def cp_ctl(etcd: EtcdServer) -> AsyncIterator[InProcessControlPlane]:
    """A control plane that also runs the (leader-elected) controllers."""
    async with InProcessControlPlane(etcd, controllers=True, allow_fake_power=True) as plane:
        yield plane


@pytest_asyncio.fixture(loop_scope="session")
async def clients(cp: InProcessControlPlane) -> AsyncIterator[Clients]:
    async with Clients(cp.port) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def world(clients: Clients) -> World:
    return await build_world(clients)

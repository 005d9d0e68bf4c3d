"""End-to-end fixtures: ``region`` is a real control plane with one host
(``tools.region.region``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tools.region.etcd import EtcdServer
from tools.region.region import Region, running_region


@pytest_asyncio.fixture(loop_scope="session")
async def region(etcd: EtcdServer) -> AsyncIterator[Region]:
    async with running_region(etcd) as r:
        yield r

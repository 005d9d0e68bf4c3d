"""The unary wrapper: deadlines are honoured, domain errors abort with the
mapped status, unexpected errors become INTERNAL."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import grpc
import pytest

from control_plane.api.rpc import unary
from control_plane.domain.errors import NotFound


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def time_remaining(self) -> float | None:
        return self.remaining

    def code(self) -> None:
        return None

    def peer(self) -> str:
        return "test"

    def cancelled(self) -> bool:
        return False

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        self.aborted = (code, details)
        raise Aborted


class Svc:
    def __init__(self) -> None:
        self.ran = 0

    @unary("Test")
    async def Slow(self, request: float, context: Any) -> str:
        self.ran += 1
        await asyncio.sleep(request)
        return "done"

    @unary("Test")
    async def Missing(self, request: str, context: Any) -> str:
        raise NotFound(f"{request} not found")

    @unary("Test")
    async def Buggy(self, request: str, context: Any) -> str:
        raise KeyError("internal detail")


async def test_expired_deadline_is_refused_before_the_body_runs() -> None:
    svc, ctx = Svc(), FakeContext(remaining=0.0)
    with pytest.raises(Aborted):
        await svc.Slow(0.0, ctx)
    assert svc.ran == 0 and ctx.aborted is not None
    assert ctx.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_body_is_cut_at_the_deadline() -> None:
    svc, ctx = Svc(), FakeContext(remaining=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(Aborted):
        await svc.Slow(5.0, ctx)
    assert loop.time() - start < 1.0
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await svc.Slow(0.0, FakeContext(remaining=None)) == "done"


async def test_domain_and_unexpected_errors_are_mapped() -> None:
    ctx = FakeContext(remaining=10)
    with pytest.raises(Aborted):
        await Svc().Missing("hosts/x", ctx)
    assert ctx.aborted == (grpc.StatusCode.NOT_FOUND, "hosts/x not found")
    ctx = FakeContext(remaining=10)
    with pytest.raises(Aborted):
        await Svc().Buggy("x", ctx)
    assert ctx.aborted == (grpc.StatusCode.INTERNAL, "internal error")

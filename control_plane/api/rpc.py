"""The wrapper every unary handler runs in: deadline, metrics, error mapping.

``@unary("TenantService")`` turns ``async def Method(self, request, context)``
into a handler that

1. runs the body under ``asyncio.timeout(context.time_remaining())`` (capped
   at ``MAX_CALL_SECONDS``), so a call whose client deadline passes stops at
   its next await instead of doing work nobody waits for; an already expired
   deadline is refused before the body runs (and so before any write);
2. maps a raised domain error to a ``google.rpc.Status`` with details through
   ``control_plane.api.errors`` (the one table) and aborts the call with it;
3. records ``bmaas_cp_rpc_requests_total{code}`` and
   ``bmaas_cp_rpc_duration_seconds{code}`` (the duration children of codes
   other than OK are made on first use: a histogram child is 15 series).

Streaming handlers (``AgentService.Connect``) do their own mapping with
``errors.abort``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from control_plane import metrics
from control_plane.api import errors
from control_plane.domain.errors import BmaasError

MAX_CALL_SECONDS = 60.0

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


class Context(Protocol):
    """The part of ``grpc.aio.ServicerContext`` the handlers use (grpc ships no types)."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...
    def time_remaining(self) -> float | None: ...
    def code(self) -> Any: ...
    def peer(self) -> str: ...
    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...
    def cancelled(self) -> bool: ...
    async def abort(
        self, code: Any, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn: ...


Handler = Callable[[Self, Req, Context], Awaitable[Resp]]


def unary(service: str) -> Callable[[Handler[Self, Req, Resp]], Handler[Self, Req, Resp]]:
    def wrap(fn: Handler[Self, Req, Resp]) -> Handler[Self, Req, Resp]:
        method = fn.__name__
        requests = {
            code: metrics.RPC_REQUESTS.labels(service, method, code.name)
            for code in grpc.StatusCode
        }
        durations = {
            code: metrics.RPC_DURATION.labels(service, method, code.name)
            for code in (grpc.StatusCode.OK,)  # the rest on first use
        }

        @functools.wraps(fn)
        async def handler(self: Self, request: Req, context: Context) -> Resp:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                remaining = context.time_remaining()
                budget = MAX_CALL_SECONDS if remaining is None else min(remaining, MAX_CALL_SECONDS)
                if budget <= 0:
                    raise TimeoutError("deadline exceeded before the call started")
                async with asyncio.timeout(budget):
                    return await fn(self, request, context)
            except (BmaasError, TimeoutError) as exc:
                status = errors.grpc_status(exc)
                code = status.code
                await context.abort(status.code, status.details, status.trailing_metadata)
                raise AssertionError("unreachable") from exc
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                status = errors.grpc_status(exc)  # logs it; INTERNAL without internals
                code = status.code
                await context.abort(status.code, status.details, status.trailing_metadata)
                raise AssertionError("unreachable") from exc
            finally:
                if not isinstance(code, grpc.StatusCode):
                    code = grpc.StatusCode.UNKNOWN
                duration = durations.get(code)
                if duration is None:
                    duration = durations[code] = metrics.RPC_DURATION.labels(
                        service, method, code.name
                    )
                duration.observe(time.perf_counter() - start)
                requests[code].inc()

        return handler

    return wrap


def metadata(context: Context) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(context.invocation_metadata() or ())

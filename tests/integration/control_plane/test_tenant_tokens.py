"""Tenant-token lifecycle against two control-plane replicas on one etcd.

Both replicas cache verified tokens for 300 s here, so a refusal within a
second can come only from the token watch (revocation) or the per-call
expiry check -- not from a cache entry running out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from bmaas.v1 import common_pb2, operator_pb2, tenant_pb2
from tools.region.control_plane import Clients, InProcessControlPlane, bearer
from tools.region.etcd import EtcdServer
from tools.region.wait import wait_for

DAY = 24 * 3600


class Replicas:
    def __init__(self, a: Clients, b: Clients) -> None:
        self.a, self.b = a, b

    @property
    def both(self) -> tuple[Clients, Clients]:
        return self.a, self.b


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(etcd: EtcdServer) -> AsyncIterator[Replicas]:
    async with (
        InProcessControlPlane(etcd, auth_cache_ttl=300, token_last_use_interval=0.2) as pa,
        InProcessControlPlane(etcd, auth_cache_ttl=300, token_last_use_interval=0.2) as pb,
        Clients(pa.port) as a,
        Clients(pb.port) as b,
    ):
        await a.operator.CreateTenant(
            operator_pb2.CreateTenantRequest(tenant=common_pb2.Tenant(name="tenants/acme")),
            metadata=a.op_md,
        )
        yield Replicas(a, b)


async def issue(c: Clients, ttl: int = 0) -> operator_pb2.IssueTenantTokenResponse:
    return await c.operator.IssueTenantToken(
        operator_pb2.IssueTenantTokenRequest(tenant="tenants/acme", ttl_seconds=ttl),
        metadata=c.op_md,
    )


async def works(c: Clients, token: str) -> bool:
    try:
        await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=bearer(token))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, exc
        return False
    return True


async def refusal(c: Clients, token: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await c.tenant.ListInstances(tenant_pb2.ListRequest(), metadata=bearer(token))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return exc.value.details() or ""


async def test_a_revoked_token_is_refused_on_every_replica_within_a_second(
    replicas: Replicas,
) -> None:
    tok = await issue(replicas.a)
    keep = await issue(replicas.a)
    for c in replicas.both:  # both replicas now hold the token in their caches
        assert await works(c, tok.token) and await works(c, keep.token)
    revoked = await replicas.a.operator.RevokeTenantToken(
        operator_pb2.RevokeTenantTokenRequest(tenant="tenants/acme", token_id=tok.token_id),
        metadata=replicas.a.op_md,
    )
    start = time.monotonic()
    assert revoked.token_id == tok.token_id and revoked.revoke_time.seconds > 0
    for c in replicas.both:
        await wait_for(lambda c=c: _refused(c, tok.token), timeout=1.0, interval=0.02)  # type: ignore[misc]
        assert time.monotonic() - start < 1.0
        assert "revoked" in await refusal(c, tok.token)
        assert await works(c, keep.token)  # only that token
    again = await replicas.b.operator.RevokeTenantToken(
        operator_pb2.RevokeTenantTokenRequest(tenant="tenants/acme", token_id=tok.token_id),
        metadata=replicas.b.op_md,
    )
    assert again.revoke_time == revoked.revoke_time  # idempotent


async def _refused(c: Clients, token: str) -> bool:
    return not await works(c, token)


async def test_an_expired_token_is_refused_on_every_replica_within_a_second(
    replicas: Replicas,
) -> None:
    tok = await issue(replicas.b, ttl=2)
    expires = tok.expire_time.ToNanoseconds() / 1e9
    assert expires - tok.create_time.ToNanoseconds() / 1e9 == pytest.approx(2, abs=0.01)
    for c in replicas.both:
        assert await works(c, tok.token)
    assert time.time() < expires  # it worked while valid (from the cache after that)
    for c in replicas.both:
        await wait_for(lambda c=c: _refused(c, tok.token), timeout=4.0, interval=0.02)  # type: ignore[misc]
        assert time.time() - expires < 1.0
        assert "expired" in await refusal(c, tok.token)


async def test_list_shows_the_lifecycle_and_never_a_secret(replicas: Replicas) -> None:
    a, b = replicas.both
    used = await issue(a, ttl=3600)
    idle = await issue(a)
    assert idle.expire_time.seconds - idle.create_time.seconds == 30 * DAY  # the default
    assert await works(b, used.token)

    async def listed() -> dict[str, operator_pb2.TenantTokenInfo]:
        resp = await a.operator.ListTenantTokens(
            operator_pb2.ListTenantTokensRequest(tenant="tenants/acme"), metadata=a.op_md
        )
        raw = resp.SerializeToString()
        for t in (used, idle):
            assert t.token.split(".", 1)[1].encode() not in raw
        return {t.token_id: t for t in resp.tokens}

    async def last_use_written() -> bool:
        return (await listed())[used.token_id].HasField("last_use_time")

    await wait_for(last_use_written, timeout=5.0)  # written by replica b's flusher
    tokens = await listed()
    assert set(operator_pb2.TenantTokenInfo.DESCRIPTOR.fields_by_name) == {
        "tenant", "token_id", "create_time", "expire_time", "last_use_time", "revoke_time"
    }  # fmt: skip
    u, i = tokens[used.token_id], tokens[idle.token_id]
    assert u.tenant == "tenants/acme" and u.expire_time == used.expire_time
    assert abs(u.last_use_time.seconds - time.time()) < 60
    assert not i.HasField("last_use_time") and not i.HasField("revoke_time")
    ids = [t.token_id for t in (await a.operator.ListTenantTokens(
        operator_pb2.ListTenantTokensRequest(tenant="tenants/acme"), metadata=a.op_md
    )).tokens]  # fmt: skip
    assert ids.index(idle.token_id) < ids.index(used.token_id)  # newest first


async def test_bad_token_requests_are_refused_and_change_nothing(replicas: Replicas) -> None:
    a = replicas.a
    await a.operator.CreateTenant(
        operator_pb2.CreateTenantRequest(tenant=common_pb2.Tenant(name="tenants/other")),
        metadata=a.op_md,
    )
    tok = await issue(a)
    cases = [
        (
            a.operator.IssueTenantToken,
            operator_pb2.IssueTenantTokenRequest(tenant="tenants/acme", ttl_seconds=400 * DAY),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ttl_seconds",
        ),
        (
            a.operator.RevokeTenantToken,
            operator_pb2.RevokeTenantTokenRequest(tenant="tenants/other", token_id=tok.token_id),
            grpc.StatusCode.NOT_FOUND,
            "token_id",
        ),
        (
            a.operator.RevokeTenantToken,
            operator_pb2.RevokeTenantTokenRequest(tenant="tenants/acme", token_id="nope"),
            grpc.StatusCode.NOT_FOUND,
            "token_id",
        ),
        (
            a.operator.ListTenantTokens,
            operator_pb2.ListTenantTokensRequest(tenant="tenants/ghost"),
            grpc.StatusCode.NOT_FOUND,
            "tenants/ghost",
        ),
    ]
    before = await a.operator.ListTenantTokens(
        operator_pb2.ListTenantTokensRequest(tenant="tenants/acme"), metadata=a.op_md
    )
    for method, request, code, said in cases:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await method(request, metadata=a.op_md)  # type: ignore[operator]
        assert exc.value.code() == code and said in (exc.value.details() or "")
        assert "\n" not in (exc.value.details() or "")
    after = await a.operator.ListTenantTokens(
        operator_pb2.ListTenantTokensRequest(tenant="tenants/acme"), metadata=a.op_md
    )
    assert after == before
    assert await works(a, tok.token)
    other = await a.operator.ListTenantTokens(
        operator_pb2.ListTenantTokensRequest(tenant="tenants/other"), metadata=a.op_md
    )
    assert list(other.tokens) == []
    # a tenant token cannot manage tokens
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await a.operator.ListTenantTokens(
            operator_pb2.ListTenantTokensRequest(tenant="tenants/acme"),
            metadata=bearer(tok.token),
        )
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED

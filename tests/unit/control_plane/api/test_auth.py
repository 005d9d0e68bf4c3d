"""Bearer credentials: formats, digest comparison, caching, refusals."""

from __future__ import annotations

import asyncio

import pytest

from control_plane.api import auth
from control_plane.domain.errors import Unauthenticated
from control_plane.domain.tenant import TenantToken


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


WALL = 1_000_000.0


def make(
    lookups: list[str], clock: Clock, wall: Clock | None = None, **record: float
) -> tuple[auth.Authenticator, str, str]:
    """*record*: fields of the stored token ``tok1`` (expire_time, revoke_time)."""
    tenant_secret, host_secret = auth.new_secret(), auth.new_secret()
    wall = wall or Clock()
    if not wall.now:
        wall.now = WALL

    async def tenant_tokens(token_id: str) -> TenantToken | None:
        lookups.append(token_id)
        if token_id != "tok1":
            return None
        return TenantToken(
            id="tok1",
            tenant="acme",
            sha256=auth.digest(tenant_secret),
            create_time=WALL - 10,
            **({"expire_time": WALL + 3600} | record),
        )

    async def host_credentials(host_id: str) -> str | None:
        lookups.append(host_id)
        return auth.digest(host_secret) if host_id == "h1" else None

    a = auth.Authenticator(
        operator_tokens=["op-secret"],
        tenant_tokens=tenant_tokens,
        host_credentials=host_credentials,
        cache_ttl=5.0,
        clock=clock,
        wall_clock=wall,
    )
    return a, auth.tenant_token("tok1", tenant_secret), auth.agent_credential("h1", host_secret)


def md(token: str) -> list[tuple[str, str | bytes]]:
    return [("authorization", f"Bearer {token}")]


async def test_tenant_tokens_resolve_and_are_cached_for_the_ttl() -> None:
    lookups: list[str] = []
    clock = Clock()
    a, token, _ = make(lookups, clock)
    assert token.startswith("bmt_tok1.") and len(token) > 40
    assert await a.tenant(md(token)) == "acme"
    assert await a.tenant(md(token)) == "acme"
    assert lookups == ["tok1"]
    clock.now = 6.0
    assert await a.tenant(md(token)) == "acme"
    assert lookups == ["tok1", "tok1"]


@pytest.mark.parametrize(
    "bad",
    ["", "bmt_tok1.wrong", "bmt_tok2.x", "tok1.x", "bmt_.x", "op-secret"],
)
async def test_bad_tenant_tokens_are_refused_without_echo(bad: str) -> None:
    a, _, _ = make([], Clock())
    with pytest.raises(Unauthenticated) as exc:
        await a.tenant(md(bad) if bad else [])
    if bad:
        assert bad not in str(exc.value)


async def test_agent_credentials_name_their_host() -> None:
    a, token, cred = make([], Clock())
    assert await a.agent(md(cred)) == "h1"
    for bad in (cred + "x", "h2." + cred.split(".", 1)[1], token):
        with pytest.raises(Unauthenticated):
            await a.agent(md(bad))


def test_operator_token_and_header_forms() -> None:
    a, token, _ = make([], Clock())
    a.operator(md("op-secret"))
    a.operator([("Authorization", b"bearer op-secret")])
    for bad in (md("op-secretx"), md(token), [("authorization", "Basic op-secret")], None):
        with pytest.raises(Unauthenticated):
            a.operator(bad)
    no_op = auth.Authenticator(
        tenant_tokens=lambda _: None,  # type: ignore[arg-type, return-value]
        host_credentials=lambda _: None,  # type: ignore[arg-type, return-value]
    )
    with pytest.raises(Unauthenticated):
        no_op.operator(md(""))


def test_several_operator_tokens_and_rotation() -> None:
    a, _, _ = make([], Clock())
    a.set_operator_tokens(["old-op", "new-op", ""])
    assert a.operator_token_count == 2
    a.operator(md("old-op"))
    a.operator(md("new-op"))
    with pytest.raises(Unauthenticated):
        a.operator(md("op-secret"))  # replaced, not added to
    a.set_operator_tokens(["new-op"])
    with pytest.raises(Unauthenticated):
        a.operator(md("old-op"))
    a.operator(md("new-op"))


async def test_expiry_is_checked_on_every_call_even_when_cached() -> None:
    lookups: list[str] = []
    wall = Clock()
    a, token, _ = make(lookups, Clock(), wall, expire_time=WALL + 30)
    assert await a.tenant(md(token)) == "acme"
    wall.now = WALL + 29.9
    assert await a.tenant(md(token)) == "acme"
    assert lookups == ["tok1"]  # served from the cache
    wall.now = WALL + 30
    with pytest.raises(Unauthenticated, match="expired"):
        await a.tenant(md(token))


async def test_expired_and_revoked_tokens_are_refused_at_lookup() -> None:
    a, token, _ = make([], Clock(), expire_time=WALL - 1)
    with pytest.raises(Unauthenticated, match="tok1 is expired") as exc:
        await a.tenant(md(token))
    assert token.split(".", 1)[1] not in str(exc.value)
    b, token, _ = make([], Clock(), revoke_time=WALL - 5)
    with pytest.raises(Unauthenticated, match="revoked"):
        await b.tenant(md(token))


async def test_a_changed_token_is_looked_up_again() -> None:
    lookups: list[str] = []
    a, token, _ = make(lookups, Clock())
    await a.tenant(md(token))
    a.token_changed("other")
    await a.tenant(md(token))
    assert lookups == ["tok1"]
    a.token_changed("tok1")
    await a.tenant(md(token))
    assert lookups == ["tok1", "tok1"]


async def test_a_lookup_racing_a_change_is_not_cached() -> None:
    release = asyncio.Event()
    lookups: list[str] = []
    a, token, _ = make(lookups, Clock())
    inner = a._tenant_tokens

    async def slow(token_id: str) -> TenantToken | None:
        await release.wait()
        return await inner(token_id)

    a._tenant_tokens = slow
    call = asyncio.create_task(a.tenant(md(token)))
    await asyncio.sleep(0)  # the lookup is in flight
    a.token_changed("tok1")
    release.set()
    assert await call == "acme"
    a._tenant_tokens = inner
    await a.tenant(md(token))
    assert lookups == ["tok1", "tok1"]  # the raced answer was not cached


async def test_a_lookup_racing_a_forget_is_not_cached() -> None:
    """The token watch restarted (events in between may be lost): forget()."""
    release = asyncio.Event()
    lookups: list[str] = []
    a, token, _ = make(lookups, Clock())
    inner = a._tenant_tokens

    async def slow(token_id: str) -> TenantToken | None:
        await release.wait()
        return await inner(token_id)

    a._tenant_tokens = slow
    call = asyncio.create_task(a.tenant(md(token)))
    await asyncio.sleep(0)
    a.forget()
    release.set()
    assert await call == "acme"
    a._tenant_tokens = inner
    await a.tenant(md(token))
    await a.tenant(md(token))
    assert lookups == ["tok1", "tok1"]  # cached only from the second lookup on


async def test_uses_are_collected_for_one_write_per_round() -> None:
    wall = Clock()
    a, token, _ = make([], Clock(), wall)
    for i in range(5):
        wall.now = WALL + i
        await a.tenant(md(token))
    assert a.take_uses() == {"tok1": WALL + 4}
    assert a.take_uses() == {}

"""Bearer credentials: formats, digest comparison, caching, refusals."""

from __future__ import annotations

import pytest

from control_plane.api import auth
from control_plane.domain.errors import Unauthenticated


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(lookups: list[str], clock: Clock) -> tuple[auth.Authenticator, str, str]:
    tenant_secret, host_secret = auth.new_secret(), auth.new_secret()

    async def tenant_tokens(token_id: str) -> tuple[str, str] | None:
        lookups.append(token_id)
        return ("acme", auth.digest(tenant_secret)) if token_id == "tok1" else None

    async def host_credentials(host_id: str) -> str | None:
        lookups.append(host_id)
        return auth.digest(host_secret) if host_id == "h1" else None

    a = auth.Authenticator(
        operator_token="op-secret",
        tenant_tokens=tenant_tokens,
        host_credentials=host_credentials,
        cache_ttl=5.0,
        clock=clock,
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
        operator_token=None,
        tenant_tokens=lambda _: None,
        host_credentials=lambda _: None,  # type: ignore[arg-type, return-value]
    )
    with pytest.raises(Unauthenticated):
        no_op.operator(md(""))

"""Tenant-token verbs against a real control plane: issue with a TTL, list
(never a secret), revoke (the token stops working), bad input refused."""

from __future__ import annotations

import time

from tests.integration.bmctl.conftest import World, covers


@covers("token issue", "token list", "token revoke")
def test_issue_list_revoke(world: World) -> None:
    op = world.op
    short = op.json("token", "issue", world.tenant, "--ttl", "12h")
    token, token_id = short["token"], short["token_id"]
    assert short["expire_time"] > short["create_time"]
    assert op.json("instance", "list", token=token) == []  # it works (a last use)
    listed = op.json("token", "list", world.tenant)
    assert token_id in [t["token_id"] for t in listed]
    assert {"token", "sha256", "secret"}.isdisjoint(k for t in listed for k in t)
    secret = token.split(".", 1)[1]
    table = op("token", "list", world.tenant).out
    assert secret not in table and secret not in op("-o", "yaml", "token", "list", world.tenant).out
    assert table.splitlines()[0].split() == [
        "TENANT", "TOKEN", "ID", "CREATED", "EXPIRES", "LAST", "USED", "REVOKED"
    ]  # fmt: skip
    revoked = op.json("token", "revoke", world.tenant, token_id)
    assert revoked["token_id"] == token_id and revoked["revoke_time"]
    # refused within a second (the replica's token watch drops its cache entry)
    deadline = time.monotonic() + 1.0
    while (refused := op("instance", "list", token=token, expect=None)).code == 0:
        assert time.monotonic() < deadline, "a revoked token still works after 1 s"
    assert refused.code == 1
    assert "revoked" in refused.err and len(refused.err.splitlines()) == 1
    again = op.json("token", "list", world.tenant)
    assert [t.get("revoke_time") for t in again if t["token_id"] == token_id] == [
        revoked["revoke_time"]
    ]
    # bad input: one line, nothing changed
    assert op("token", "issue", world.tenant, "--ttl", "soon", expect=2).err.count("\n") == 1
    assert "ttl_seconds" in op("token", "issue", world.tenant, "--ttl", "400d", expect=1).err
    op("token", "revoke", world.tenant, "0123456789abcdef", expect=3)
    assert len(op.json("token", "list", world.tenant)) == len(again)

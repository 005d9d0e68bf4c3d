"""Operator commands against a real control plane: the catalogue, tenants,
tokens, quotas and hosts (enroll with an explicit power driver, list with
filter and paging, cordon, maintenance, decommission)."""

from __future__ import annotations

from tests.integration.bmctl.conftest import HOST_FLAGS, Bmctl, World, covers, register_agent


@covers(
    "instance-type create",
    "instance-type list",
    "image register",
    "image list",
)
def test_catalogue_as_operator_and_tenant(world: World) -> None:
    op, t = world.op, world.t
    # created by the world fixture; both services list them
    assert [i["name"] for i in op.json("instance-type", "list", "--operator")] == [world.itype]
    assert [i["name"] for i in t.json("instance-type", "list")] == [world.itype]
    out = t("instance-type", "list").out.splitlines()
    assert out[0].split() == ["NAME", "HOST", "CLASS", "CPUS", "MEMORY", "GIB"]
    assert out[1].split() == ["instanceTypes/bm-c64", "c64", "64", "256"]
    op("image", "register", "images/alpine", "--source-uri", "file:///a.raw", "--size-gib", "2")
    listed = t("-o", "yaml", "image", "list", "--filter", "os=debian-12").yaml()
    assert [i["name"] for i in listed] == [world.image]
    both = op("image", "list", "--operator", "-o", "json").json()
    assert sorted(i["name"] for i in both) == ["images/alpine", world.image]
    # the tenant may not use the operator service
    denied = t("image", "list", "--operator", expect=1)
    assert denied.err.startswith("bmctl: error: ") and len(denied.err.splitlines()) == 1


@covers("tenant create", "tenant list", "tenant get", "token issue", "quota get", "quota set")
def test_tenants_tokens_and_quotas(world: World) -> None:
    op = world.op
    op("tenant", "create", "--id", "beta", "--display-name", "Beta Ltd", "--max-instances", "2")
    names = [t["name"] for t in op.json("tenant", "list")]
    assert sorted(names) == sorted([world.tenant, "tenants/beta"])
    assert op.json("tenant", "get", "beta")["display_name"] == "Beta Ltd"
    table = op("tenant", "get", "tenants/beta").out.splitlines()
    assert "Beta Ltd" in table[1]
    first = op("token", "issue", "beta", "--request-id", "r1")
    assert "bmt_" in first.out and "shown once" in first.err
    again = op.json("token", "issue", "beta", "--request-id", "r1")
    assert again["replayed"] is True and not again.get("token")
    # the new token works as the tenant
    token = op.json("token", "issue", "beta")["token"]
    assert op.json("instance", "list", token=token) == []
    quota = op.json("quota", "get", "beta")
    assert quota["quota"] == {"max_instances": 2, "max_volume_gib": "10240"}
    op("quota", "set", "beta", "--max-volume-gib", "50")
    got = op("-o", "yaml", "quota", "get", "beta").yaml()
    assert got["quota"] == {"max_instances": 2, "max_volume_gib": "50"}
    out = op("quota", "set", "beta", "--max-instances", "0", "--max-volume-gib", "0").out
    assert out.splitlines()[0].split()[:2] == ["TENANT", "INSTANCES"]
    op("quota", "set", "beta", expect=2)
    op("quota", "set", "beta", "--max-instances", "1", "--etag", "stale", expect=1)


@covers(
    "host enroll",
    "host list",
    "host get",
    "host cordon",
    "host uncordon",
    "host maintenance",
    "host decommission",
)
def test_host_lifecycle_without_agents(world: World, endpoint: str, bmctl: Bmctl) -> None:
    op = world.op
    for i in range(3):
        cred = world.enroll(f"h{i}", rack=f"r{i}")
        assert cred.startswith(f"h{i}.")
        if i < 2:
            register_agent(endpoint, f"hosts/h{i}", cred)
    qemu = op("host", "enroll", "--id", "hq", *HOST_FLAGS[:-1], "qemu", "--request-id", "rq")
    assert "qemu" in qemu.out and "shown once" in qemu.err
    retry = op(
        "-o", "json", "host", "enroll", "--id", "hq", *HOST_FLAGS[:-1], "qemu", "--request-id", "rq"
    )
    # a retry re-issues (rotates) the credential while the host is still ENROLLED
    assert retry.json()["host"]["name"] == "hosts/hq" and retry.json()["agent_credential"]
    table = op("host", "list").out.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "ZONE"] and len(table) == 5
    available = op.json("host", "list", "--filter", "state=AVAILABLE")
    assert [h["name"] for h in available] == ["hosts/h0", "hosts/h1"]
    page = op("-o", "json", "host", "list", "--page-size", "2", "--one-page")
    assert len(page.json()) == 2 and "--page-token" in page.err
    token = page.err.split("--page-token ")[1].split()[0]
    rest = op.json("host", "list", "--page-size", "2", "--page-token", token)
    assert len(rest) == 2 and {h["name"] for h in rest}.isdisjoint(h["name"] for h in page.json())
    assert len(op.json("host", "list", "--page-size", "1", "--limit", "3")) == 3

    assert op.json("host", "cordon", "h1", "--reason", "fan")["cordoned"] is True
    assert op.json("host", "get", "hosts/h1")["cordoned"] is True
    assert "cordoned" not in op.json("host", "uncordon", "hosts/h1")
    got = op("host", "maintenance", "hosts/h1", "on", "--reason", "bios", "--wait")
    assert "MAINTENANCE" in got.out and "MAINTENANCE" in got.err  # progress on stderr
    # out of maintenance the host is wiped first; no agent here, so it stays CLEANING
    late = op("host", "maintenance", "h1", "off", "--wait", "--timeout", "1", expect=4)
    (line,) = late.err.splitlines()[-1:]
    assert (
        line.startswith("bmctl: error: timed out after 1s waiting for hosts/h1")
        and "CLEANING" in line
    )
    assert op.json("host", "get", "h1")["state"] == "HOST_STATE_CLEANING"
    refused = op("host", "decommission", "h0", expect=1)
    assert "FAILED_PRECONDITION" in refused.err and "maintenance" in refused.err
    gone = op("-o", "yaml", "host", "decommission", "h2", "--reason", "eol").yaml()
    assert gone["state"] == "HOST_STATE_DECOMMISSIONED"

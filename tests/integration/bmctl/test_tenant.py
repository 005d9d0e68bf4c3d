"""Tenant commands against a real control plane with no agent behind its
hosts (instances never move on their own): volumes, VPCs, subnets, network interfaces, placement
groups, and the instance verbs that need no agent; ``--wait`` on a state
that never comes ends with the timeout exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.bmctl.conftest import World, covers, register_agent


@pytest.fixture
def placed(world: World, endpoint: str) -> str:
    """An instance SCHEDULED on an available host with no agent behind it."""
    register_agent(endpoint, "hosts/h0", world.enroll("h0"))
    inst = world.t.json("instance", "create", "--instance-type", "bm-c64", "--image", "debian-12")
    assert inst["host"] == "hosts/h0" and inst["state"] == "INSTANCE_STATE_SCHEDULED"
    name: str = inst["name"]
    return name


@covers("instance create", "instance list", "instance get", "instance console")
def test_instance_create_and_wait_timeout(world: World, endpoint: str, tmp_path: Path) -> None:
    t = world.t
    register_agent(endpoint, "hosts/h0", world.enroll("h0"))
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAA me@x\n")
    ud = tmp_path / "ud"
    ud.write_text("#cloud-config\n")
    name = f"{world.tenant}/instances/web-1"
    # no agent: the instance never runs, so --wait gives up with exit status 4
    late = t(
        "instance",
        "create",
        "--name",
        name,
        "--type",
        "bm-c64",
        "--image",
        "images/debian-12",
        "--ssh-key-file",
        str(key),
        "--user-data-file",
        str(ud),
        "--wait",
        "--timeout",
        "1.5",
        expect=4,
    )
    assert late.out == ""
    assert f"bmctl: {name}: SCHEDULED" in late.err  # plain progress (stderr is no TTY)
    assert late.err.splitlines()[-1].startswith(
        f"bmctl: error: timed out after 1.5s waiting for {name} to be RUNNING"
    )
    got = t.json("instance", "get", name)
    assert got["ssh_keys"] == ["ssh-ed25519 AAAA me@x"] and got["user_data"] == "#cloud-config\n"
    rows = t("instance", "list", "--filter", "state=SCHEDULED").out.splitlines()
    assert rows[1].split()[:2] == [name, "SCHEDULED"]
    assert t.json("instance", "list", "--filter", "state=RUNNING") == []
    console = t("instance", "console", name)
    assert console.code == 0 and console.out == ""  # the server has printed nothing
    assert t("-o", "json", "instance", "console", name).json()["instance"] == name
    full = t("instance", "create", "--type", "bm-c64", "--image", "debian-12", expect=1)
    assert full.err.startswith("bmctl: error: RESOURCE_EXHAUSTED: no capacity")


@covers("volume create", "volume list", "volume get", "volume attach", "volume detach")
@covers("volume resize", "volume delete")
def test_volumes(world: World, placed: str) -> None:
    t = world.t
    vol = t.json("volume", "create", "--size-gib", "20", "--wait")
    name = vol["name"]
    assert vol["state"] == "VOLUME_STATE_AVAILABLE"
    named = t("volume", "create", "--name", f"{world.tenant}/volumes/data", "--size-gib", "1")
    assert "AVAILABLE" in named.out
    assert [v["size_gib"] for v in t.json("volume", "list", "--filter", f"name={name}")] == ["20"]
    attached = t("-o", "yaml", "volume", "attach", name, placed, "--wait", "--timeout", "10")
    assert (
        attached.yaml()["state"] == "VOLUME_STATE_IN_USE" and attached.yaml()["instance"] == placed
    )
    assert "IN_USE" in attached.err
    resized = t.json("volume", "resize", name, "--size-gib", "30", "--wait")
    assert resized["size_gib"] == "30"
    shrink = t("volume", "resize", name, "--size-gib", "10", expect=1)
    assert "INVALID_ARGUMENT" in shrink.err or "FAILED_PRECONDITION" in shrink.err
    busy = t("volume", "delete", name, expect=1)
    assert "FAILED_PRECONDITION" in busy.err
    assert t.json("volume", "detach", name, "--wait")["state"] == "VOLUME_STATE_AVAILABLE"
    assert "instance" not in t.json("volume", "get", name)
    deleted = t("volume", "delete", name, "--wait")
    assert deleted.out == "" and f"deleted {name}" in deleted.err
    assert t("volume", "get", name, expect=3).err.startswith("bmctl: error: NOT_FOUND")
    t("volume", "delete", f"{world.tenant}/volumes/data")


@covers("vpc create", "vpc list", "vpc get", "vpc delete")
@covers("subnet create", "subnet list", "subnet get", "subnet delete")
@covers("nic create", "nic list", "nic get", "nic attach", "nic detach", "nic delete")
def test_networks(world: World, placed: str) -> None:
    t = world.t
    vpc = t.json("vpc", "create", "--cidr", "10.9.0.0/16")["name"]
    t("vpc", "create", "--name", f"{world.tenant}/vpcs/prod", "--cidr", "10.8.0.0/16")
    assert sorted(v["name"] for v in t.json("vpc", "list")) == sorted(
        [vpc, f"{world.tenant}/vpcs/prod"]
    )
    assert t.json("vpc", "get", vpc)["cidr"] == "10.9.0.0/16"
    subnet = t.json("subnet", "create", "--vpc", vpc, "--cidr", "10.9.1.0/24", "--zone", "z1")
    t("subnet", "create", "--parent", vpc, "--name", f"{vpc}/subnets/b", "--cidr", "10.9.2.0/24")
    assert len(t.json("subnet", "list", "--filter", "zone=z1")) == 1
    assert t("-o", "yaml", "subnet", "get", subnet["name"]).yaml()["cidr"] == "10.9.1.0/24"
    nic = t.json("nic", "create", "--subnet", subnet["name"])
    assert nic["private_ip"] == "10.9.1.4"
    assert [n["name"] for n in t.json("nic", "list")] == [nic["name"]]
    assert t("nic", "get", nic["name"]).out.splitlines()[1].split()[2] == "10.9.1.4"
    assert t.json("nic", "attach", nic["name"], placed)["instance"] == placed
    in_use = t("nic", "delete", nic["name"], expect=1)
    assert "detach it first" in in_use.err
    assert "instance" not in t.json("nic", "detach", nic["name"])
    t("nic", "delete", nic["name"])
    refused = t("vpc", "delete", vpc, expect=1)
    assert refused.err.count("\n") == 1 and "FAILED_PRECONDITION" in refused.err
    t("subnet", "delete", f"{vpc}/subnets/b")
    t("subnet", "delete", subnet["name"])
    t("vpc", "delete", vpc)
    assert t("vpc", "get", vpc, expect=3).code == 3


@covers(
    "placement-group create",
    "placement-group list",
    "placement-group get",
    "placement-group delete",
)
def test_placement_groups(world: World) -> None:
    t = world.t
    group = t("placement-group", "create", "--name", f"{world.tenant}/placementGroups/g1")
    assert "SPREAD_RACKS" in group.out
    name = f"{world.tenant}/placementGroups/g1"
    assert t.json("placement-group", "get", name)["strategy"] == "PLACEMENT_STRATEGY_SPREAD_RACKS"
    assert [g["name"] for g in t.json("placement-group", "list")] == [name]
    t("placement-group", "delete", name)
    assert t.json("placement-group", "list") == []

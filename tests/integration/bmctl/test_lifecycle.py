"""``--wait`` through real transient states: a control plane with its
controllers and a ``bmaas-agent`` process (fake power driver) per host.
The instance is created, stopped, started, rebooted and terminated with
``--wait``; a host with an instance is drained with ``--wait`` (terminate,
wipe, back to AVAILABLE)."""

from __future__ import annotations

from collections.abc import Callable

from tests.integration.bmctl.conftest import World, covers

Agents = Callable[[str, str, str], object]


@covers(
    "instance create",
    "instance stop",
    "instance start",
    "instance reboot",
    "instance terminate",
    "host get",
)
def test_instance_lifecycle_with_wait(
    live_world: World, live_endpoint: str, agents: Agents
) -> None:
    w, t = live_world, live_world.t
    agents(live_endpoint, "h0", w.enroll("h0"))
    w.wait_available("h0")
    created = t(
        "-o",
        "json",
        "instance",
        "create",
        "--type",
        "bm-c64",
        "--image",
        "debian-12",
        "--wait",
        "--timeout",
        "60",
    )
    inst = created.json()
    name = inst["name"]
    assert inst["state"] == "INSTANCE_STATE_RUNNING" and inst["host"] == "hosts/h0"
    states = [line.split(": ")[2].split()[0] for line in created.err.splitlines() if name in line]
    assert states[0] in ("SCHEDULED", "PROVISIONING") and states[-1] == "RUNNING"
    assert len(states) == len(set(states))  # one line per state change
    stopped = t.json("instance", "stop", name, "--wait", "--timeout", "60")
    assert stopped["state"] == "INSTANCE_STATE_STOPPED"
    started = t("instance", "start", name, "--wait", "--timeout", "60")
    assert started.out.splitlines()[1].split()[:2] == [name, "RUNNING"]
    rebooted = t("-o", "yaml", "instance", "reboot", name, "--wait", "--timeout", "60")
    assert rebooted.yaml()["state"] == "INSTANCE_STATE_RUNNING" and "REBOOTING" in rebooted.err
    done = t.json("instance", "terminate", name, "--wait", "--timeout", "60")
    assert done["state"] == "INSTANCE_STATE_TERMINATED"
    t("instance", "terminate", name, "--wait", "--timeout", "5")  # already: at once


@covers("host drain", "instance get")
def test_host_drain_with_wait(live_world: World, live_endpoint: str, agents: Agents) -> None:
    w, t = live_world, live_world.t
    agents(live_endpoint, "h0", w.enroll("h0"))
    w.wait_available("h0")
    inst = t.json(
        "instance",
        "create",
        "--type",
        "bm-c64",
        "--image",
        "debian-12",
        "--wait",
        "--timeout",
        "60",
    )
    drained = w.op(
        "-o", "json", "host", "drain", "h0", "--reason", "rma", "--wait", "--timeout", "60"
    )
    host = drained.json()
    assert host["cordoned"] is True and not host.get("instance")
    assert host["state"] == "HOST_STATE_AVAILABLE"  # wiped by its agent
    assert "CLEANING" in drained.err or "ALLOCATED" in drained.err
    assert t.json("instance", "get", inst["name"])["state"] == "INSTANCE_STATE_TERMINATED"

"""``make demo``: a whole local region from one command; ``make demo-down`` removes it.

``python -m tools.demo up`` starts, with real components only:

- etcd and one ``bmaas-control-plane`` replica on loopback;
- two emulated hosts: a network namespace each (``bmaas-demo-h1``,
  ``bmaas-demo-h2``) for the card's side of the network, joined by an
  underlay link (a veth pair, 192.168.79.0/24), and a ``bmaas-agent`` per
  host with the ``qemu`` power driver and a 10 GiB local disk;

then drives it with ``bmctl`` as an operator (instance type, the UEFI boot
image, two hosts enrolled with their agent credentials) and as a tenant (a
VPC, a subnet, two network interfaces, a volume, two instances).  Both
servers boot from their cloud disks through OVMF, get their addresses by
DHCP from their cards, read their metadata, and ping each other across the
VXLAN overlay (shown from their consoles); the volume is attached to the
first instance and grown online, and the guest sees the new size.  Then it
prints how to use ``bmctl`` against the running region and exits, leaving
the region running.

``python -m tools.demo down`` stops everything ``up`` started, by the pids,
names and paths it recorded in ``.demo/state.json``: instances are
terminated through the API first (so the agents tear down servers,
back-ends, TAPs and bridges), then agents, the control plane and etcd are
stopped, leftover processes of the recorded state directories are killed,
namespaces deleted and ``.demo/`` removed.  ``up`` runs ``down`` first when
a previous region is still recorded, so ``make demo`` twice in a row works.

etcd, the control plane and the agents are started by the same launchers
as the tests' and the benchmarks' (``tools.region``), detached: they keep
running after ``up`` returns, and ``down`` stops them by the pids recorded.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from host_agent.config import LocalDisk
from tools.region.agents import AgentProcess
from tools.region.control_plane import ControlPlaneProcess
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage, disk_with
from tools.region.paths import GUEST_DIR, ROOT
from tools.region.ports import free_port
from tools.region.process import StartError, processes_under, spawn, stop_process

DEMO = ROOT / ".demo"
STATE = DEMO / "state.json"
BIN = Path(sys.executable).parent
NAMESPACES = {1: "bmaas-demo-h1", 2: "bmaas-demo-h2"}
UNDERLAY = {1: "192.168.79.1", 2: "192.168.79.2"}
RUN_DIR = Path("/run/bmaas-demo")
TENANT = "tenants/demo"

console = Console(highlight=False, soft_wrap=True)

GUEST = r"""
set +e  # images/init runs the script under set -e; the demo goes on past a failed step
while ! ip link show eth0 >/dev/null 2>&1; do sleep 0.3; done
ip link set eth0 up
udhcpc -i eth0 -f -q -n -t 30 -T 1 >/dev/null 2>&1
echo "DEMO address $(ip -4 -o addr show eth0 | awk '{print $4}') (DHCP from the card)"
imds_token=$(printf 'PUT /latest/api/token HTTP/1.0\r\n%s\r\n\r\n' \
  'X-aws-ec2-metadata-token-ttl-seconds: 300' | nc 169.254.169.254 80 | tail -n 1)
imds() {
  wget -q -O - --header "X-aws-ec2-metadata-token: $imds_token" "http://169.254.169.254/latest/$1"
}
echo "DEMO metadata instance-id=$(imds meta-data/instance-id)"
peer=$(imds user-data)
n=0
until ping -c1 -W1 "$peer" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 120 ] && break; done
ping -c3 -W2 "$peer" | sed -n 's/^/DEMO ping: /p' | tail -n 3
last=""
while true; do
  if [ -b /dev/vdc ]; then
    size=$(( $(cat /sys/block/vdc/size) * 512 ))
    [ "$size" != "$last" ] && echo "DEMO volume /dev/vdc is $size bytes" && last=$size
  fi
  sleep 1
done
"""


# -- small helpers -------------------------------------------------------------


class DemoError(Exception):
    """A step failed; the message says which and why."""


def _state() -> dict[str, Any]:
    try:
        return dict(json.loads(STATE.read_text()))
    except (OSError, ValueError):
        return {}


def _save(state: dict[str, Any]) -> None:
    DEMO.mkdir(exist_ok=True)
    STATE.write_text(json.dumps(state, indent=1))


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """A step with a live spinner and, when it is done, how long it took."""
    started = time.monotonic()
    with console.status(f"[bold]{title}[/] ..."):
        try:
            yield
        except BaseException:
            console.print(f"[red]✗[/] {title} ({time.monotonic() - started:.1f} s)")
            raise
    console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - started:.1f} s)[/]")


def _record(state: dict[str, Any], name: str, pid: int) -> None:
    """Record the pid of a detached process (``down`` stops it)."""
    state.setdefault("pids", {})[name] = pid
    _save(state)


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise DemoError(f"{what}: not after {timeout:.0f} s")


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


class Bmctl:
    """``bmctl`` as a user runs it; every call is shown, JSON results parsed."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def __call__(self, *args: str, token: str, show: bool = True) -> Any:
        argv = [str(BIN / "bmctl"), "--endpoint", self.endpoint, "--token", token, "-o", "json"]
        if show:
            console.print(f"  [dim]$ bmctl {' '.join(args)}[/]")
        done = subprocess.run([*argv, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DemoError(f"bmctl {' '.join(args)}: {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else None


# -- up ------------------------------------------------------------------------


def up(*, prometheus: bool = False) -> int:
    if STATE.exists():
        console.print("[yellow]a previous demo region is recorded: taking it down first[/]")
        down()
    DEMO.mkdir(exist_ok=True)
    state: dict[str, Any] = {"namespaces": [], "state_dirs": []}
    _save(state)
    started = time.monotonic()
    with step("building the UEFI boot image (GPT + EFI system partition, no mounts)"):
        disk = _boot_image()
    with step("starting etcd"):
        etcd = EtcdServer(
            name="demo", data_dir=DEMO / "etcd", log_path=DEMO / "etcd.log", detached=True
        ).start(timeout=30)
        _record(state, "etcd", etcd.pid)
    with step("starting the control plane (API + controllers)"):
        metrics = f"127.0.0.1:{free_port()}"
        token = "op-" + secrets.token_hex(16)
        plane = ControlPlaneProcess(
            etcd,
            lease_ttl=None,  # the control plane's own defaults, as a user starts it
            grace=None,
            operator_token=token,
            extra_args=("--metrics", metrics),
            log=DEMO / "control-plane.log",
            detached=True,
        ).start(timeout=30)
        _record(state, "control-plane", plane.pid)
        state.update(endpoint=f"127.0.0.1:{plane.port}", operator_token=token, metrics=metrics)
        _save(state)
    bmctl = Bmctl(state["endpoint"])
    op = state["operator_token"]
    with step("two emulated hosts: a namespace each, joined by an underlay link"):
        _hosts(state)
    with step("operator: instance type, boot image, two hosts enrolled"):
        bmctl("instance-type", "create", "bm-small", "--host-class", "small",
              "--cpus", "1", "--memory-gib", "1", token=op)  # fmt: skip
        checksum = "sha256:" + hashlib.sha256(disk.read_bytes()).hexdigest()
        bmctl("image", "register", "demo-linux", "--source-uri", f"file://{disk}",
              "--size-gib", "1", "--checksum", checksum, token=op)  # fmt: skip
        creds = {}
        for h in NAMESPACES:
            host = bmctl("host", "enroll", "--id", f"host-{h}", "--zone", "zone-a",
                         "--rack", f"r{h}", "--host-class", "small", "--cpus", "2",
                         "--memory-gib", "1", "--disk-gib", "10", "--power-driver", "qemu",
                         token=op)  # fmt: skip
            creds[h] = host["agent_credential"]
    with step("starting an agent (the card's management plane) on each host"):
        for h in NAMESPACES:
            _agent(state, h, creds[h])
        _wait("hosts AVAILABLE", lambda: _all_available(bmctl, op), 60)
    with step("tenant: a token, a VPC, a subnet, two network interfaces, a volume"):
        bmctl("tenant", "create", "--id", "demo", "--max-instances", "4",
              "--max-volume-gib", "50", token=op)  # fmt: skip
        tok = bmctl("token", "issue", TENANT, token=op)["token"]
        state["tenant_token"] = tok
        _save(state)
        bmctl("vpc", "create", "--name", f"{TENANT}/vpcs/prod", "--cidr", "10.30.0.0/16",
              token=tok)  # fmt: skip
        bmctl("subnet", "create", "--vpc", f"{TENANT}/vpcs/prod",
              "--name", f"{TENANT}/vpcs/prod/subnets/web", "--cidr", "10.30.1.0/24",
              token=tok)  # fmt: skip
        nics = [
            bmctl("nic", "create", "--subnet", f"{TENANT}/vpcs/prod/subnets/web",
                  "--name", f"{TENANT}/networkInterfaces/web-{i}-eth0", token=tok)
            for i in (1, 2)
        ]  # fmt: skip
        bmctl("volume", "create", "--name", f"{TENANT}/volumes/data", "--size-gib", "1",
              token=tok)  # fmt: skip
    names = [f"{TENANT}/instances/web-1", f"{TENANT}/instances/web-2"]
    with step("tenant: two bare-metal instances, each with a NIC; the volume on web-1"):
        for i, (name, peer) in enumerate(zip(names, reversed(nics), strict=True)):
            user_data = DEMO / f"user-data-{i}"
            user_data.write_text(peer["private_ip"])
            bmctl("instance", "create", "--name", name, "--type", "instanceTypes/bm-small",
                  "--image", "images/demo-linux", "--user-data-file", str(user_data),
                  token=tok)  # fmt: skip
            bmctl("nic", "attach", nics[i]["name"], name, token=tok)
        bmctl("volume", "attach", f"{TENANT}/volumes/data", names[0], token=tok)
    with step("waiting for both servers to boot from their cloud disks (UEFI, TCG)"):
        for name in names:
            _wait(f"{name} RUNNING", _is_running(bmctl, tok, name), 180)
        for name in names:
            _wait(f"{name} pinged its peer", _console_has(bmctl, tok, name, "DEMO ping"), 300, 1.0)
    for name in names:
        console.print(f"[bold]{name}[/] console (via [cyan]bmctl instance console[/]):")
        for line in _console(bmctl, tok, name).splitlines():
            if line.startswith("DEMO"):
                console.print(f"    {line[5:]}")
    with step("growing the volume online to 2 GiB"):
        bmctl("volume", "resize", f"{TENANT}/volumes/data", "--size-gib", "2", token=tok)
        _wait("the guest to see 2 GiB", _console_has(bmctl, tok, names[0], f"is {2 << 30} bytes"),
              120, 1.0)  # fmt: skip
    for line in _console(bmctl, tok, names[0], show=False).splitlines():
        if line.startswith("DEMO volume"):
            console.print(f"    {line[5:]}")
    if prometheus:
        with step("starting Prometheus (scrapes the control plane and both agents)"):
            _prometheus(state)
    console.print(f"\n[bold green]region up in {time.monotonic() - started:.0f} s[/]")
    _hints(state)
    return 0


def _boot_image() -> Path:
    image = GuestImage.build(GUEST_DIR, quiet=True)
    # an unmodified kernel command line: the qemu power driver gives virtio-net
    # devices vectors=0 under TCG (QEMU 7.2's MSI-X crash, docs/offload.md)
    return disk_with(image, GUEST, DEMO / "demo-linux.raw")


def _hosts(state: dict[str, Any]) -> None:
    for name in NAMESPACES.values():
        _ip("netns", "add", name)
        state["namespaces"].append(name)
        _save(state)
        _ip("-n", name, "link", "set", "lo", "up")
    _ip("-n", NAMESPACES[1], "link", "add", "underlay", "type", "veth", "peer", "name",
        "underlay", "netns", NAMESPACES[2])  # fmt: skip
    for h, name in NAMESPACES.items():
        _ip("-n", name, "addr", "add", f"{UNDERLAY[h]}/24", "dev", "underlay")
        _ip("-n", name, "link", "set", "underlay", "up")


def _agent(state: dict[str, Any], h: int, credential: str) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    state.setdefault("agent_metrics", {})[str(h)] = metrics
    host_dir = DEMO / f"host-{h}"
    agent = AgentProcess(
        endpoints=(state["endpoint"],),
        host_id=f"host-{h}",
        credential=credential,
        state_dir=host_dir,
        settings={
            "power_driver": "qemu",
            "netns": NAMESPACES[h],
            "underlay_address": UNDERLAY[h],
            "run_dir": RUN_DIR / f"host-{h}",
            "volume_dir": DEMO / "volumes",
            "probe_kernel": GUEST_DIR / "vmlinuz",
            "metrics": metrics,
            "cpus": 2,
            "memory_gib": 1,
            "server_memory_mib": 512,
            "shutdown_grace": 1.0,
        },
        local_disks=(LocalDisk(name="nvme0", size_gib=10),),
        log=DEMO / f"agent-{h}.log",
        detached=True,
    )
    state["state_dirs"].append(str(host_dir / "state"))
    _record(state, f"agent-{h}", agent.start().pid)


def _prometheus(state: dict[str, Any]) -> None:
    """Debian's prometheus on a free loopback port, with the alert rules of
    deploy/prometheus and every /metrics endpoint of the region."""
    port = free_port()
    agents = ", ".join(f'"{a}"' for a in state["agent_metrics"].values())
    config = DEMO / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        f"rule_files:\n  - {ROOT / 'deploy' / 'prometheus' / 'rules.yml'}\n"
        "scrape_configs:\n"
        "  - job_name: bmaas-control-plane\n    static_configs:\n"
        f'      - targets: ["{state["metrics"]}"]\n'
        "  - job_name: bmaas-agent\n    static_configs:\n"
        f"      - targets: [{agents}]\n"
    )
    proc = spawn([
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={DEMO / 'prometheus'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], log=DEMO / "prometheus.log", detached=True)  # fmt: skip
    _record(state, "prometheus", proc.pid)
    state["prometheus"] = f"http://127.0.0.1:{port}"
    _save(state)
    _wait("Prometheus ready", lambda: _http_ok(f"{state['prometheus']}/-/ready"), 60)


def _all_available(bmctl: Bmctl, token: str) -> bool:
    hosts = bmctl("host", "list", token=token, show=False) or []
    return len(hosts) == len(NAMESPACES) and all(h.get("state") == "HOST_STATE_AVAILABLE"
                                                  for h in hosts)  # fmt: skip


def _state_of(bmctl: Bmctl, token: str, name: str) -> str:
    inst = bmctl("instance", "get", name, token=token, show=False)
    if inst.get("state") == "INSTANCE_STATE_FAILED":
        raise DemoError(f"{name} FAILED: {inst.get('failure_reason')}")
    return str(inst.get("state", "")).removeprefix("INSTANCE_STATE_")


def _is_running(bmctl: Bmctl, token: str, name: str) -> Callable[[], bool]:
    return lambda: _state_of(bmctl, token, name) == "RUNNING"


def _console_has(bmctl: Bmctl, token: str, name: str, text: str) -> Callable[[], bool]:
    return lambda: text in _console(bmctl, token, name)


def _console(bmctl: Bmctl, token: str, name: str, *, show: bool = False) -> str:
    out = bmctl("instance", "console", name, token=token, show=show) or {}
    return base64.b64decode(out.get("output", "")).decode(errors="replace")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _hints(state: dict[str, Any]) -> None:
    ep, tok, op = state["endpoint"], state["tenant_token"], state["operator_token"]
    console.print(
        f"""
[bold]The region keeps running.[/] Try it with bmctl ([cyan]{BIN / "bmctl"}[/]):

  export BMAAS_ENDPOINT={ep}
  export BMAAS_TOKEN={tok}          # the tenant "demo"
  bmctl instance list
  bmctl instance console {TENANT}/instances/web-1
  bmctl instance reboot {TENANT}/instances/web-2 --wait
  bmctl volume resize {TENANT}/volumes/data --size-gib 3
  bmctl --token {op} host list    # as the operator
  curl -s http://{state["metrics"]}/metrics | grep bmaas_cp_

Logs are in .demo/*.log.  [bold]make demo-down[/] stops and removes everything.
"""
    )
    if "prometheus" in state:
        console.print(
            f"Prometheus: [cyan]{state['prometheus']}[/] (try the query "
            "bmaas_cp_instances or bmaas_agent_device_io_bytes_total)\n"
        )


# -- down ----------------------------------------------------------------------


def down() -> int:
    state = _state()
    if not state:
        console.print("no demo region is recorded")
        _sweep(state)
        return 0
    with (
        step("terminating instances (agents tear down servers and fabric)"),
        contextlib.suppress(DemoError, KeyError, OSError),
    ):
        _terminate_all(state)
    with step("stopping agents, the control plane and etcd"):
        for _name, pid in sorted(state.get("pids", {}).items(), key=_stop_order):
            stop_process(pid)
    with step("removing what is left: servers, back-ends, namespaces, files"):
        _sweep(state)
    return 0


def _terminate_all(state: dict[str, Any]) -> None:
    bmctl = Bmctl(state["endpoint"])
    tok = state.get("tenant_token")
    if not tok:
        return
    instances = bmctl("instance", "list", token=tok, show=False) or []
    live = [i["name"] for i in instances if i.get("state") != "INSTANCE_STATE_TERMINATED"]
    for name in live:
        bmctl("instance", "terminate", name, token=tok, show=False)
    op = state["operator_token"]
    _wait("hosts cleaned", lambda: _all_available(bmctl, op), 60)


def _stop_order(item: tuple[str, int]) -> int:
    name = item[0]
    return 0 if name.startswith("agent") else 1 if name in ("control-plane", "prometheus") else 2


def _sweep(state: dict[str, Any]) -> None:
    """Kill processes that still run from the demo's files, delete its namespaces
    and directories.  Only what ``up`` created: found by its names and paths
    (``.demo/``, ``/run/bmaas-demo``, the ``NAMESPACES``)."""
    for pid in processes_under(DEMO, RUN_DIR, unless="tools.demo"):
        stop_process(pid, timeout=5.0)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    present = set(re.findall(r"^(\S+)", listed, flags=re.M))
    for name in NAMESPACES.values():
        if name in present:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    shutil.rmtree(DEMO, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.demo", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down"], nargs="?", default="up")
    parser.add_argument("--prometheus", action="store_true", help="also start Prometheus")
    args = parser.parse_args(argv)
    try:
        return up(prometheus=args.prometheus) if args.action == "up" else down()
    except (DemoError, StartError) as exc:
        console.print(f"[red]demo: {exc}[/]\nlogs: .demo/*.log; [bold]make demo-down[/] cleans up")
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``make demo``: the system's main job on one machine, with real components.

Part 1, the control plane: a real etcd, a control-plane replica
(``bmaas-control-plane``), and ``bmctl`` as an operator and as a tenant:
enrol hosts, create a tenant and its token, launch a bare-metal instance,
watch it being placed on a whole host and reach RUNNING, terminate it and
watch the host go through CLEANING back to AVAILABLE, show a refused call,
and scrape the Prometheus endpoint.  The hosts use the ``fake`` power
driver (no agent runs yet: the controllers play the agent's part).

Part 2, the offload card: ``offload-blk`` serves a sparse cloud disk over
vhost-user to a QEMU server stand-in (``-nodefaults``, memfd RAM, no
emulated disk); the Linux guest writes and reads through virtio-blk, the
checksums are compared with the image file on the host, then the disk is
grown online and the guest sees the new capacity without a reboot.

Every command is printed before it runs; everything started is stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from bmaas.v1 import agent_pb2, agent_pb2_grpc
from host_agent.power.accel import accelerator
from host_agent.power.qemu import BlkDisk, QemuServer, ServerSpec
from tests.harness.control_plane import OPERATOR_TOKEN, ControlPlaneProcess
from tests.harness.etcd import EtcdServer
from tests.harness.guest import ROOT, GuestImage, command_output
from tests.harness.offload_blk import OffloadBlkProcess
from tests.harness.ports import free_port

BIN = Path(sys.executable).parent
MiB = 1 << 20


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


class Bmctl:
    def __init__(self, port: int) -> None:
        self.env = {**os.environ, "BMAAS_ENDPOINT": f"127.0.0.1:{port}"}

    def run(self, *args: str, token: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "bmctl"), *args],
            env={**self.env, "BMAAS_TOKEN": token},
            capture_output=True,
            text=True,
        )

    def __call__(self, *args: str, token: str, check: bool = True, quiet: bool = False) -> str:
        """Run bmctl as a person would, showing the command and what it printed."""
        print(f"$ bmctl {' '.join(args)}", flush=True)
        done = self.run(*args, token=token)
        out = (done.stderr if quiet else done.stdout + done.stderr).rstrip()
        if out:
            print(out, flush=True)
        if check and done.returncode != 0:
            raise SystemExit(f"demo: bmctl {args[0]} {args[1]} failed ({done.returncode})")
        if not check:
            print(f"(exit status {done.returncode})", flush=True)
        return done.stdout

    def json(self, *args: str, token: str) -> Any:
        return json.loads(self("-o", "json", *args, token=token, quiet=True))


def wait_state(bmctl: Bmctl, noun: str, name: str, state: str, token: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = json.loads(bmctl.run("-o", "json", noun, "get", name, token=token).stdout)
        if str(got.get("state", "")).endswith(state):
            print(f"   {name} is {state}", flush=True)
            return dict(got)
        time.sleep(0.3)
    raise SystemExit(f"demo: {name} did not reach {state} in 60 s")


async def register_agents(port: int, credentials: dict[str, str]) -> None:
    """What each host's agent does first (the agent itself lands with its own issue)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for host, credential in credentials.items():
            await stub.Register(
                agent_pb2.RegisterRequest(host=host, agent_version="demo"),
                metadata=(("authorization", f"Bearer {credential}"),),
            )


def control_plane_part() -> None:
    say("Part 1: control plane (etcd + bmaas-control-plane + bmctl)")
    metrics_port = free_port()
    with (
        EtcdServer(name="demo") as etcd,
        ControlPlaneProcess(etcd, extra_args=("--metrics", f"127.0.0.1:{metrics_port}")) as cp,
    ):
        print(f"etcd at {etcd.url}; control plane at 127.0.0.1:{cp.port}")
        bmctl = Bmctl(cp.port)
        op = OPERATOR_TOKEN

        say("operator: catalogue, hosts and a tenant")
        bmctl("instance-type", "create", "bm-c1-large", "--host-class", "c1",
              "--cpus", "64", "--memory-gib", "256", token=op)  # fmt: skip
        bmctl("image", "register", "debian-12", "--source-uri", "file:///images/debian-12.raw",
              "--size-gib", "8", token=op)  # fmt: skip
        credentials = {}
        for i, rack in enumerate(["r1", "r1", "r2", "r2"], start=1):
            enrolled = bmctl.json(
                "host", "enroll", "--id", f"h{i}", "--zone", "z1", "--rack", rack,
                "--host-class", "c1", "--cpus", "64", "--memory-gib", "256", token=op,
            )  # fmt: skip
            credentials[f"hosts/h{i}"] = enrolled["agent_credential"]
        print("   each host's agent registers with its own credential (AgentService.Register)")
        asyncio.run(register_agents(cp.port, credentials))
        for i in range(1, 5):
            wait_state(bmctl, "host", f"hosts/h{i}", "AVAILABLE", op)
        bmctl("tenant", "create", "--id", "acme", "--max-instances", "2", token=op)
        token = bmctl.json("tenant", "token", "tenants/acme", token=op)["token"]
        print("   (tenant token issued; only its hash is stored)")

        say("tenant: launch a bare-metal instance")
        created = bmctl.json("instance", "create", "--name", "tenants/acme/instances/web-1",
                             "--type", "instanceTypes/bm-c1-large",
                             "--image", "images/debian-12", token=token)  # fmt: skip
        name = created["name"]
        running = wait_state(bmctl, "instance", name, "RUNNING", token)
        print(f"   placed on whole host {running.get('host')}")
        bmctl("host", "list", token=op)

        say("bad input is refused and changes nothing")
        bmctl("instance", "get", "tenants/acme/instances/nope", token=token, check=False)
        bmctl("instance", "create", "--type", "instanceTypes/bm-c1-large", "--image",
              "images/debian-12", "--name", "tenants/acme/instances/Bad_Name!",
              token=token, check=False)  # fmt: skip

        say("tenant: terminate; the host is wiped before anyone else gets it")
        bmctl("instance", "terminate", name, token=token)
        wait_state(bmctl, "instance", name, "TERMINATED", token)
        host = str(running.get("host"))
        wait_state(bmctl, "host", host, "AVAILABLE", op)

        say(f"Prometheus scrape of http://127.0.0.1:{metrics_port}/metrics (excerpt)")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            lines = r.read().decode().splitlines()
        shown = [ln for ln in lines if ln.startswith("bmaas_cp_") and not ln.endswith(" 0.0")]
        print("\n".join([ln for ln in shown if "_bucket" not in ln][:10]))


GUEST_SCRIPT = """\
dev=/dev/vda
echo "guest: $(cat /sys/block/vda/size) sectors, $(ls /sys/block/vda/mq | wc -l) queues"
dd if=/dev/urandom of=/tmp/data bs=1M count=4 2>/dev/null
dd if=/tmp/data of=$dev bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null
echo "written=$(sha256sum /tmp/data | cut -d' ' -f1)"
echo 3 > /proc/sys/vm/drop_caches
back=$(dd if=$dev bs=1M skip=8 count=4 iflag=direct 2>/dev/null | sha256sum)
echo "readback=${back%% *}"
echo "RESIZE-WAIT $(cat /sys/block/vda/size)"
old=$(cat /sys/block/vda/size)
i=0
while [ "$(cat /sys/block/vda/size)" = "$old" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
echo "resized=$(cat /sys/block/vda/size)"
"""


async def data_plane_part() -> None:
    say("Part 2: offload card (offload-blk over vhost-user to a QEMU server stand-in)")
    image = GuestImage.build()
    accel = accelerator(image.kernel, cache_dir=ROOT / ".cache")
    work = Path(tempfile.mkdtemp(prefix="bmaas-demo-"))
    disk = work / "vol-1.img"
    with disk.open("wb") as f:
        f.truncate(64 * MiB)
    blk = OffloadBlkProcess(socket_path=work / "vol-1.sock", image=disk, queues=2,
                            serial="vol-1")  # fmt: skip
    print(f"$ offload-blk --socket {blk.socket_path} --image {disk} --queues 2 --serial vol-1")
    await blk.start()
    server = QemuServer(
        ServerSpec(
            name="demo-server",
            serial_log=work / "serial.log",
            accel=accel,
            cpus=2,
            kernel=image.kernel,
            initrd=image.initrd_with(GUEST_SCRIPT, work / "initrd.img"),
            append="console=ttyS0 panic=-1 quiet",
            disks=(BlkDisk(blk.socket_path, num_queues=2),),
        )
    )
    print(f"QEMU ({accel}) with only a vhost-user-blk-pci device; booting the guest ...")
    try:
        await server.start()
        await server.wait_for_serial(r"RESIZE-WAIT \d+", timeout=180)
        out = command_output(server.serial_text())
        print("\n".join("   " + ln for ln in out.strip().splitlines()))
        fields = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        with disk.open("rb") as f:
            f.seek(8 * MiB)
            host_sum = hashlib.sha256(f.read(4 * MiB)).hexdigest()
        print(f"   host image file, same range: {host_sum}")
        ok = fields.get("written") == fields.get("readback") == host_sum
        print(f"   guest write == guest read-back == host file: {'yes' if ok else 'NO'}")
        print(f"$ truncate -s 128M {disk} && kill -HUP {blk.pid}")
        with disk.open("r+b") as f:
            f.truncate(128 * MiB)
        blk.send_signal(signal.SIGHUP)
        match = await server.wait_for_serial(r"resized=(\d+)", timeout=90)
        grown = int(match.group(1))
        print(f"   guest now sees {grown} sectors ({grown * 512 // MiB} MiB) without a reboot")
        await server.wait(timeout=60)
        if not ok or grown != 128 * MiB // 512:
            raise SystemExit("demo: data-plane check failed")
    finally:
        await server.aclose()
        await blk.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    control_plane_part()
    asyncio.run(data_plane_part())
    say("demo finished: every component stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

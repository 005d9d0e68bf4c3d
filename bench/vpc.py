"""Guest-to-guest TCP throughput across the VPC overlay (the e2e setup).

The same setup as ``tests/e2e/test_vpc_guests.py``: a real control plane, two
emulated hosts (network namespaces joined by an underlay link), a real
``bmaas-agent`` per host (qemu power driver), two instances in one subnet.
Each NIC is ``offload-net`` between the guest's virtio-net and a TAP in the
VPC's bridge, and the hosts are joined by VXLAN.  Once the guests have their
addresses (DHCP from their cards) and reach each other, the client sends
``--mib`` MiB of zeros to the server with busybox ``nc``, ``--runs`` times,
timing each transfer from the guest's ``/proc/uptime`` (10 ms resolution).

The guests run under TCG on this machine, so the numbers measure the whole
emulated path (guest CPU, QEMU, the card's Python back-end, the kernel's
bridge and VXLAN), not the card alone; ``bench/net.py`` compares the card's
back-end with DPDK's.  Writes ``bench/results/vpc.json`` and the section
between ``<!-- vpc:begin -->`` and ``<!-- vpc:end -->`` of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.doc import write_section
from bmaas.v1 import common_pb2, tenant_pb2
from tools.region.agents import AGENT_RUN_ROOT
from tools.region.etcd import EtcdServer
from tools.region.guest import GuestImage, disk_with
from tools.region.region import Region, qemu_agent, running_region
from tools.region.world import enroll

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "vpc.json"
UNDERLAY = {1: "192.168.81.1", 2: "192.168.81.2"}

GUEST = r"""
while ! ip link show eth0 >/dev/null 2>&1; do sleep 0.3; done
ip link set eth0 up
udhcpc -i eth0 -f -q -n -t 30 -T 1 >/dev/null 2>&1
imds_token=$(printf 'PUT /latest/api/token HTTP/1.0\r\n%s\r\n\r\n' \
  'X-aws-ec2-metadata-token-ttl-seconds: 300' | nc 169.254.169.254 80 | tail -n 1)
imds() {
  wget -q -O - --header "X-aws-ec2-metadata-token: $imds_token" "http://169.254.169.254/latest/$1"
}
set -- $(imds user-data)
peer=$1 role=$2 runs=$3 mib=$4
n=0
until ping -c1 -W1 "$peer" >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 120 ] && break; done
if [ "$role" = server ]; then
  i=0; while [ $i -lt $runs ]; do nc -l -p 5000 > /dev/null; i=$((i+1)); done
  echo BENCH-SERVER-DONE
else
  sleep 2
  i=0
  while [ $i -lt $runs ]; do
    t0=$(cut -d' ' -f1 /proc/uptime)
    dd if=/dev/zero bs=64k count=$((mib * 16)) 2>/dev/null | nc -w 10 "$peer" 5000
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "BENCH-RUN $i mib=$mib t0=$t0 t1=$t1"
    i=$((i+1)); sleep 1
  done
  echo BENCH-CLIENT-DONE
fi
while true; do sleep 1; done
"""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    image = GuestImage.build()
    work = Path(tempfile.mkdtemp(prefix="bmaas-bench-vpc-"))
    tag = uuid.uuid4().hex[:4]
    ns = {h: f"bmaas-benchvpc{h}-{tag}" for h in UNDERLAY}
    try:
        for name in ns.values():
            _ip("netns", "add", name)
        _ip("-n", ns[1], "link", "add", "u0", "type", "veth", "peer", "name", "u0",
            "netns", ns[2])  # fmt: skip
        for h, name in ns.items():
            _ip("-n", name, "addr", "add", f"{UNDERLAY[h]}/24", "dev", "u0")
            _ip("-n", name, "link", "set", "u0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
        with EtcdServer() as etcd:
            async with running_region(etcd) as region:
                return await _measure(region, image, work, ns, args)
    finally:
        _cleanup(ns, work)


def _cleanup(ns: dict[int, str], work: Path) -> None:
    for name in ns.values():
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(AGENT_RUN_ROOT, ignore_errors=True)  # this process's agents' sockets


async def _measure(
    region: Region, image: GuestImage, work: Path, ns: dict[int, str], args: argparse.Namespace
) -> dict[str, Any]:
    c, md = region.clients, region.tenant_md
    host2, cred2 = await enroll(
        c, host_id="metal-2", host_class="small", power_driver="qemu", register=False
    )
    disk = disk_with(image, GUEST, work / "vpc.raw", extra="pci=nomsi")
    img = await region.register_image("bench", disk)
    vpc = await c.tenant.CreateVpc(
        tenant_pb2.CreateVpcRequest(
            request_id=str(uuid.uuid4()),
            vpc=common_pb2.Vpc(name=f"{region.tenant}/vpcs/bench", cidr="10.40.0.0/16"),
        ),
        metadata=md,
    )
    subnet = await c.tenant.CreateSubnet(
        tenant_pb2.CreateSubnetRequest(
            request_id=str(uuid.uuid4()),
            subnet=common_pb2.Subnet(name=f"{vpc.name}/subnets/s", cidr="10.40.1.0/24"),
        ),
        metadata=md,
    )
    nics = [
        await c.tenant.CreateNetworkInterface(
            tenant_pb2.CreateNetworkInterfaceRequest(
                request_id=str(uuid.uuid4()),
                network_interface=common_pb2.NetworkInterface(
                    name=f"{region.tenant}/networkInterfaces/n{i}", subnet=subnet.name
                ),
            ),
            metadata=md,
        )
        for i in (1, 2)
    ]
    roles = [(nics[1].private_ip, "server"), (nics[0].private_ip, "client")]
    hosts = {1: (region.host, region.credential), 2: (host2.name, cred2)}
    agents = [
        qemu_agent(region, work / f"agent{h}", image, host=hosts[h][0], credential=hosts[h][1],
                   netns=ns[h], underlay_address=UNDERLAY[h])
        for h in UNDERLAY
    ]  # fmt: skip
    async with agents[0], agents[1]:
        names = []
        for nic, (peer, role) in zip(nics, roles, strict=True):
            name = await region.create(img, user_data=f"{peer} {role} {args.runs} {args.mib}")
            await c.tenant.AttachNetworkInterface(
                tenant_pb2.AttachNetworkInterfaceRequest(name=nic.name, instance=name),
                metadata=md,
            )
            names.append(name)
        await region.wait_console(names[1], "BENCH-CLIENT-DONE", 120 + 60 * args.runs)
        console = await region.console(names[1])
        for name in names:
            await region.action("Terminate", name)
    runs = []
    for m in re.finditer(r"BENCH-RUN (\d+) mib=(\d+) t0=([\d.]+) t1=([\d.]+)", console):
        seconds = float(m.group(4)) - float(m.group(3))
        runs.append({"run": int(m.group(1)), "seconds": round(seconds, 2),
                     "mib_per_s": round(int(m.group(2)) / seconds, 2)})  # fmt: skip
    if len(runs) != args.runs:
        raise RuntimeError(f"expected {args.runs} transfers, console shows: {console[-1500:]}")
    return {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"kernel {platform.release()}",
        "accel": "tcg" if "tcg" in _accel(image) else "kvm",
        "mib": args.mib,
        "median_mib_per_s": statistics.median(r["mib_per_s"] for r in runs),
        "runs": runs,
    }


def _accel(image: GuestImage) -> str:
    from host_agent.power.accel import accelerator

    return accelerator(image.kernel, cache_dir=ROOT / ".cache")


def markdown(result: dict[str, Any]) -> str:
    rows = " / ".join(f"{r['mib_per_s']:.1f}" for r in result["runs"])
    return (
        f"Run {result['time']} on {result['machine']}, guests under {result['accel'].upper()}.\n\n"
        "| path | transfer | runs (MiB/s) | median MiB/s |\n| --- | ---: | --- | ---: |\n"
        f"| guest → offload-net → TAP → bridge → VXLAN → underlay → VXLAN → bridge → TAP → "
        f"offload-net → guest | {result['mib']} MiB x {len(result['runs'])} | {rows} "
        f"| {result['median_mib_per_s']:.1f} |\n\n"
        "Under TCG the guests' own CPU emulation dominates; `bench/net.py` isolates the card."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mib", type=int, default=32)
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    if not args.no_doc:
        write_section(
            "vpc", "Guest-to-guest TCP across the VPC overlay (bench/vpc.py)", markdown(result)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

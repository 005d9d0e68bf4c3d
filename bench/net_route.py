"""CPU per packet of the card's routed path against its plain path, same run.

Drives one ``NicServices`` (the hook ``offload-net`` runs on every frame a
guest sends) in this process, with the frames a guest would send, and
measures process CPU time per frame:

* ``plain``: UDP/IPv4 from the NIC's address to a neighbor of its subnet,
  addressed to the neighbor's MAC (checked, forwarded unchanged);
* ``routed``: the same to an address of another subnet, addressed to the
  gateway's MAC (checked, looked up in a 1000-interface VPC directory,
  rewritten: MACs, TTL, checksum).

Each case runs ``--frames`` frames, ``--runs`` times alternating, and the
minimum is kept (the least disturbed run on a shared machine).  This is the
hook alone: the ring walk, the copy out of guest memory and the TAP write
that both paths share are measured by ``bench/net.py``, so the ratio here
is an upper bound of the ratio for the whole back-end.  Writes
``bench/results/net_route.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from offload.network import packets as pk
from offload.network.router import Neighbor, VpcDirectory
from offload.network.services import DEFAULT_CARD_MAC, InstanceMetadata, NicConfig, NicServices

RESULT = Path(__file__).resolve().parent / "results" / "net_route.json"
MAC = "52:54:00:12:34:56"
IP = IPv4Address("10.8.0.5")


def _services() -> NicServices:
    config = NicConfig(
        mac=MAC,
        ip=IPv4Interface(f"{IP}/24"),
        gateway=IPv4Address("10.8.0.1"),
        metadata=InstanceMetadata(instance_id="i-1", hostname="i-1", local_ipv4=str(IP), mac=MAC),
    )
    svc = NicServices(config)
    svc.attach(lambda frame: None)
    neighbors = tuple(
        Neighbor(
            IPv4Address(f"10.8.{s}.{h}"),
            f"02:00:00:00:{s:02x}:{h:02x}",
            IPv4Network(f"10.8.{s}.0/24"),
            f"i{s}-{h}",
        )
        for s in range(4)
        for h in range(4, 254)
    )
    svc.set_directory(VpcDirectory("vpc-bench", neighbors))
    return svc


def _frame(dst_mac: str, dst: IPv4Address, size: int) -> bytes:
    datagram = pk.build_udp(IP.packed, dst.packed, 1000, 2000, bytes(size - 42))
    packet = pk.build_ipv4(IP.packed, dst.packed, pk.IPPROTO_UDP, datagram)
    return pk.build_ethernet(pk.mac_bytes(dst_mac), pk.mac_bytes(MAC), pk.ETHERTYPE_IPV4, packet)


def measure(frames: int, runs: int, sizes: tuple[int, ...]) -> dict[str, object]:
    svc = _services()
    out: dict[str, object] = {}
    for size in sizes:
        cases = {
            "plain": _frame("02:00:00:00:00:09", IPv4Address("10.8.0.9"), size),
            "routed": _frame(DEFAULT_CARD_MAC, IPv4Address("10.8.1.7"), size),
        }
        best = {name: float("inf") for name in cases}
        for _ in range(runs):
            for name, frame in cases.items():
                start = time.process_time()
                for _ in range(frames):
                    svc.classify_tx(bytearray(frame))
                best[name] = min(best[name], (time.process_time() - start) / frames * 1e9)
        out[str(size)] = {
            "plain_ns_per_frame": round(best["plain"]),
            "routed_ns_per_frame": round(best["routed"]),
            "ratio": round(best["routed"] / best["plain"], 2),
        }
    assert svc.drops.total() == 0, svc.drops
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.net_route", description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.frames, args.runs, (64, 1500))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    for size, row in result.items():
        print(size, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""NetSpec: the offload-net command line the agent builds for a NIC."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from host_agent.devices import NetSpec

SPEC = NetSpec(
    id="nics/n1",
    socket=Path("/run/n1.sock"),
    tap="tap-n1",
    mac="52:54:00:00:00:01",
    ip="10.0.0.5/24",
    gateway="10.0.0.1",
    metadata=Path("/state/n1.json"),
)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_metadata_tokens_required_by_default() -> None:
    argv = SPEC.args(Path("/run/n1.stats"))
    assert flag(argv, "--metadata-tokens") == "required"
    assert flag(argv, "--metadata") == "/state/n1.json"


def test_metadata_tokens_passed_through() -> None:
    argv = replace(SPEC, metadata_tokens="optional").args(Path("/run/n1.stats"))
    assert flag(argv, "--metadata-tokens") == "optional"


def test_no_services_without_an_address() -> None:
    argv = replace(SPEC, ip="").args(Path("/run/n1.stats"))
    assert "--metadata-tokens" not in argv and "--ip" not in argv


def test_the_vpc_directory_goes_to_offload_net() -> None:
    argv = replace(SPEC, vpc_directory=Path("/state/vpc-n1.json")).args(Path("/run/n1.stats"))
    assert flag(argv, "--vpc-directory") == "/state/vpc-n1.json"
    assert "--vpc-directory" not in SPEC.args(Path("/run/n1.stats"))
    # without an address there are no card services, so no directory either
    bare = replace(SPEC, ip="", vpc_directory=Path("/state/vpc-n1.json"))
    assert "--vpc-directory" not in bare.args(Path("/run/n1.stats"))

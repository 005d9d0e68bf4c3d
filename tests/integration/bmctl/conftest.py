"""Fixtures for the bmctl tests: a real control plane (a ``bmaas-control-plane``
process on the per-test etcd), real ``bmaas-agent`` processes on the fake
power driver, and ``bmctl``: the CLI run in-process (``bmctl.main.main``)
with its stdout/stderr captured and exit status checked.

Every test declares the commands it drives with ``@covers("noun verb", ...)``
(the ``covers`` marker is registered in pyproject.toml);
the ``bmctl`` fixture records the commands a test really runs and fails it if
a declared one never ran, and test_coverage.py fails if a command of the
argparse tree is declared by no test.  (This file is the only one here that
imports the region launchers, ``tools.region``.)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bmaas.v1 import agent_pb2, agent_pb2_grpc, common_pb2, operator_pb2_grpc, tenant_pb2
from bmaas_tls import sync_channel
from bmctl import main as cli
from tools.region.agents import AgentProcess
from tools.region.control_plane import OPERATOR_TOKEN, ControlPlaneProcess, bearer
from tools.region.etcd import EtcdServer
from tools.region.pki import default_pki, make_pki

covers = pytest.mark.covers
__all__ = [
    "OPERATOR_TOKEN",
    "Bmctl",
    "Run",
    "World",
    "covers",
    "default_pki",
    "make_pki",
    "register_agent",
]
COMMAND_PARSER = cli.build_parser()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No BMAAS_* of the caller but the region's CA, and a private home
    (config file location)."""
    for var in ("BMAAS_ENDPOINT", "BMAAS_TOKEN", "BMAAS_CONTEXT", "BMAAS_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    # the control planes speak TLS with the region's CA (tools.region.pki)
    monkeypatch.setenv("BMAAS_CA", str(default_pki().ca))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


def command_of(argv: list[str]) -> tuple[str, str] | None:
    """The (noun, verb) an argv names, skipping global options and their values."""
    takes_value = {
        opt
        for action in COMMAND_PARSER._actions
        if action.option_strings and action.nargs != 0
        for opt in action.option_strings
    }
    words = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in takes_value
        else:
            words.append(word)
    return (words[0], words[1]) if len(words) >= 2 else None


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def yaml(self) -> Any:
        return yaml.safe_load(self.out)


@dataclass
class Bmctl:
    """``bmctl(*args)``: run the CLI with this endpoint/token (None: not passed)."""

    capsys: pytest.CaptureFixture[str]
    endpoint: str | None = None
    token: str | None = None
    invoked: set[tuple[str, str]] = field(default_factory=set)

    def __call__(
        self,
        *args: str,
        token: str | None = None,
        endpoint: str | None = None,
        expect: int | None = 0,
    ) -> Run:
        argv: list[str] = []
        endpoint = endpoint if endpoint is not None else self.endpoint
        token = token if token is not None else self.token
        if endpoint is not None:
            argv += ["--endpoint", endpoint]
        if token is not None:
            argv += ["--token", token]
        argv += args
        cmd = command_of(list(args))
        if cmd is not None:
            self.invoked.add(cmd)
        self.capsys.readouterr()
        code = cli.main(argv)
        out, err = self.capsys.readouterr()
        if expect is not None:
            assert code == expect, f"bmctl {' '.join(args)} -> {code}: {err}"
        return Run(code, out, err)

    def json(self, *args: str, **kw: Any) -> Any:
        return self("-o", "json", *args, **kw).json()

    def at(self, endpoint: str | None, token: str | None = OPERATOR_TOKEN) -> Bmctl:
        return Bmctl(self.capsys, endpoint, token, self.invoked)


@pytest.fixture
def bmctl(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Bmctl]:
    runner = Bmctl(capsys)
    yield runner
    declared = {
        tuple(cmd.split()) for mark in request.node.iter_markers("covers") for cmd in mark.args
    }
    missing = sorted(" ".join(c) for c in declared - runner.invoked)
    assert not missing, f"declared by @covers but never run: {missing}"


@pytest.fixture
def endpoint(etcd: EtcdServer) -> Iterator[str]:
    """A control plane process with no agent behind its hosts: instances never
    move on their own; its controllers make a host that ``register_agent``
    registered AVAILABLE once its wipe is reported."""
    with ControlPlaneProcess(etcd, controllers=True, allow_fake_power=True) as cp:
        yield f"127.0.0.1:{cp.port}"


@pytest.fixture
def live_endpoint(etcd: EtcdServer) -> Iterator[str]:
    """A control plane process with its controllers: instances move on agent reports."""
    with ControlPlaneProcess(etcd, controllers=True, allow_fake_power=True) as cp:
        yield f"127.0.0.1:{cp.port}"


@pytest.fixture
def control_planes(etcd: EtcdServer) -> Iterator[Callable[[], ControlPlaneProcess]]:
    """Start more replicas on the test's etcd; each is killed at the end."""
    started: list[ControlPlaneProcess] = []

    def start() -> ControlPlaneProcess:
        cp = ControlPlaneProcess(etcd, controllers=False, allow_fake_power=True).start()
        started.append(cp)
        return cp

    yield start
    for cp in started:
        cp.close()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[str, str, str], AgentProcess]]:
    """``agents(endpoint, host_id, credential)``: a ``bmaas-agent`` process
    (fake power driver) for an enrolled host; all stopped at the end."""
    started: list[AgentProcess] = []

    def start(endpoint: str, host_id: str, credential: str) -> AgentProcess:
        agent = AgentProcess(
            endpoints=(endpoint,),
            host_id=host_id,
            credential=credential,
            state_dir=tmp_path / f"agent-{host_id}",
        ).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def register_agent(endpoint: str, host: str, credential: str, timeout: float = 20.0) -> None:
    """What a host agent does on boot -- Register (the host goes CLEANING),
    then the wipe report for that epoch (nothing to wipe behind a fake host)
    -- and wait until the host is AVAILABLE; for tests that need an
    available host but no agent behind it."""
    md = (("authorization", f"Bearer {credential}"),)
    with sync_channel(endpoint, default_pki().client_tls()) as channel:
        agent = agent_pb2_grpc.AgentServiceStub(channel)
        reg = agent.Register(agent_pb2.RegisterRequest(host=host), metadata=md, timeout=10)
        wiped = agent_pb2.AgentMessage(
            host_status=agent_pb2.HostStatus(host=host, wiped_epoch=reg.host.cleaning_epoch)
        )
        done = threading.Event()

        def upstream() -> Iterator[agent_pb2.AgentMessage]:
            yield wiped
            done.wait(timeout)  # the stream stays open until the host is AVAILABLE

        stream = agent.Connect(upstream(), metadata=md, timeout=timeout)
        operator = operator_pb2_grpc.OperatorServiceStub(channel)
        deadline = time.monotonic() + timeout
        try:
            while True:
                got = operator.GetHost(
                    tenant_pb2.GetRequest(name=host), metadata=bearer(OPERATOR_TOKEN), timeout=10
                )
                if got.state == common_pb2.HOST_STATE_AVAILABLE:
                    return
                assert time.monotonic() < deadline, f"{host} not AVAILABLE in {timeout}s"
                time.sleep(0.05)
        finally:
            done.set()
            stream.cancel()


HOST_FLAGS = ("--zone", "z1", "--rack", "r1", "--host-class", "c64", "--cpus", "64")
HOST_FLAGS += ("--memory-gib", "256", "--disk-gib", "100", "--power-driver", "fake")


@dataclass
class World:
    """An operator's catalogue and one tenant, made with bmctl."""

    op: Bmctl  # as the operator
    tenant: str
    t: Bmctl  # as the tenant
    itype: str = "instanceTypes/bm-c64"
    image: str = "images/debian-12"

    def enroll(self, host_id: str, *, rack: str = "r1") -> str:
        """Enroll ``hosts/{host_id}``; returns its agent credential."""
        flags = list(HOST_FLAGS)
        flags[flags.index("--rack") + 1] = rack
        got = self.op.json("host", "enroll", "--id", host_id, *flags)
        assert got["host"]["power_driver"] == "fake"
        cred: str = got["agent_credential"]
        return cred

    def wait_available(self, host: str, timeout: float = 30.0) -> None:
        """Until the host's agent has registered (the host is AVAILABLE)."""
        deadline = time.monotonic() + timeout
        while self.op.json("host", "get", host)["state"] != "HOST_STATE_AVAILABLE":
            assert time.monotonic() < deadline, f"{host} not AVAILABLE in {timeout}s"
            time.sleep(0.2)


def make_world(bmctl: Bmctl, endpoint: str) -> World:
    op = bmctl.at(endpoint)
    op(
        "instance-type",
        "create",
        "bm-c64",
        "--host-class",
        "c64",
        "--cpus",
        "64",
        "--memory-gib",
        "256",
    )
    op("image", "register", "debian-12", "--source-uri", "file:///d12.raw", "--os", "debian-12")
    tenant_id = f"acme-{uuid.uuid4().hex[:6]}"
    op("tenant", "create", "--id", tenant_id, "--max-instances", "5")
    token = op.json("token", "issue", f"tenants/{tenant_id}")["token"]
    return World(op, f"tenants/{tenant_id}", bmctl.at(endpoint, token))


@pytest.fixture
def world(bmctl: Bmctl, endpoint: str) -> World:
    return make_world(bmctl, endpoint)


@pytest.fixture
def live_world(bmctl: Bmctl, live_endpoint: str) -> World:
    return make_world(bmctl, live_endpoint)

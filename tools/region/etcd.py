"""Real etcd servers on free loopback ports with temp data dirs.

``EtcdServer.start()`` spawns ``etcd`` (Debian ``etcd-server``), waits until
its ``/health`` endpoint answers, and ``stop()`` kills it and removes the data
directory.  The binary is looked up on PATH; a missing binary is an error,
never a skip.  ``EtcdServer(tls=EtcdTlsFiles(...))`` serves clients over
TLS and requires client certificates signed by the given CA.

``EtcdServer(data_dir=..., log_path=..., detached=True)`` keeps its data
and log where the caller says (``stop()`` then leaves them) and runs in its
own session, outliving the launcher; the caller records ``pid`` and stops
it later with ``tools.region.process.stop_process``.

``EtcdCluster(3).start()`` starts three members (one cluster, peers on
loopback) and waits until every one is healthy; ``urls`` is the comma list
for ``--etcd``; ``kill(i)``/``restart(i)`` crash and revive one member
(its data kept); ``leader_index()`` asks the members which one leads raft.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tools.region.ports import free_port
from tools.region.process import StartError, log_tail, spawn


@dataclass(frozen=True, slots=True)
class EtcdTlsFiles:
    """Server certificate and key, and the CA that client certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path


class EtcdServer:
    def __init__(
        self,
        *,
        name: str = "bmaas",
        binary: str | None = None,
        tls: EtcdTlsFiles | None = None,
        data_dir: Path | None = None,
        log_path: Path | None = None,
        detached: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        found = binary or shutil.which("etcd")
        if found is None:
            raise StartError("etcd binary not found on PATH (make system-deps installs it)")
        self.binary = found
        self.name = name
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        #: a temp data dir and log are this server's to remove; given ones are the caller's
        self._owns_files = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="bmaas-etcd-"))
        self.log_path = log_path or self.data_dir.with_suffix(".log")
        self.detached = detached
        #: more etcd flags, last on the command line (``--quota-backend-bytes=...``)
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        #: ``name=peer_url,...`` of every member (a cluster sets it for all)
        self.initial_cluster = f"{self.name}=http://127.0.0.1:{self.peer_port}"
        #: an HTTP URL for /health and the JSON gateway even when clients use TLS
        self.metrics_port = free_port() if tls is not None else 0

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.client_port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def http_url(self) -> str:
        """Plain-HTTP URL of /health and the v3 JSON gateway."""
        if self.tls is not None:
            return f"http://127.0.0.1:{self.metrics_port}"
        return self.url

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        """Start the process (do not wait for it to be healthy)."""
        args = [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            "--initial-cluster-state=new",
            "--log-level=warn",
        ]
        if self.tls is not None:
            args += [
                f"--cert-file={self.tls.cert}",
                f"--key-file={self.tls.key}",
                f"--trusted-ca-file={self.tls.client_ca}",
                "--client-cert-auth",
                f"--listen-metrics-urls={self.http_url}",
            ]
        args += self.extra_args
        self._proc = spawn(args, log=self.log_path, detached=self.detached)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StartError(f"etcd exited with {self._proc.returncode}: {self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.05)
        raise StartError(f"etcd did not become healthy in {timeout}s: {self.log_tail()}")

    def start(self, timeout: float = 30.0) -> EtcdServer:
        """Spawn and wait until healthy; a server that does not get there is stopped."""
        self.spawn()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()  # the error carries the log's tail
            raise
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def kill(self) -> None:
        """SIGKILL the server but keep its data (for crash tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        """Kill the server; remove its data dir and log if it made them."""
        self.kill()
        self._proc = None
        if self._owns_files:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def status(self) -> dict[str, object] | None:
        """``Maintenance.Status`` through the JSON gateway; None if it does not answer."""
        if self.tls is not None:
            return None  # the gateway is on the TLS port
        req = urllib.request.Request(f"{self.url}/v3/maintenance/status", data=b"{}")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                out: dict[str, object] = json.loads(resp.read())
                return out
        except (OSError, ValueError):
            return None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EtcdCluster:
    """*size* etcd members forming one cluster on loopback."""

    def __init__(self, size: int = 3, *, name: str = "bmaas-m") -> None:
        self.members = [EtcdServer(name=f"{name}{i}") for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def urls(self) -> str:
        return ",".join(m.url for m in self.members)

    @property
    def url(self) -> str:
        """The ``--etcd`` value (every member), as ``EtcdServer.url`` is for one."""
        return self.urls

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.members[0].port

    def start(self, timeout: float = 60.0) -> EtcdCluster:
        for m in self.members:
            m.spawn()
        try:
            for m in self.members:
                m.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, index: int) -> None:
        self.members[index].kill()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        member = self.members[index]
        member.spawn()
        member.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.wait_healthy(timeout)

    def leader_index(self, timeout: float = 15.0) -> int:
        """Index of the raft leader (asked of the running members)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids: dict[str, int] = {}
            leader = ""
            for i, m in enumerate(self.members):
                st = m.status() if m.running else None
                if st is None:
                    continue
                header = st.get("header")
                if isinstance(header, dict):
                    ids[str(header.get("member_id"))] = i
                leader = str(st.get("leader") or leader)
            if leader in ids:
                return ids[leader]
            time.sleep(0.1)
        raise RuntimeError("no etcd member reports a leader")

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

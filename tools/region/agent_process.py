"""``AgentProcess``: a real ``bmaas-agent`` (qemu power driver) as a process.

An emulated host whose whole card can die at once: ``kill()`` SIGKILLs
the agent, the server stand-in (QEMU) and every device back-end it
started, as a host losing power would.  ``start()`` again is the host
coming back with the same state directory.  Used by the failover test and
``bench/failover.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tools.region.agents import AGENT_RUN_ROOT, tls_flags
from tools.region.pki import default_pki
from tools.region.process import kill_processes_under


class AgentProcess:
    def __init__(
        self,
        *,
        port: int,
        host: str,
        credential: str,
        dir: Path,
        probe_kernel: Path,
        storage: dict[str, str] | None = None,
        local_disk_gib: int = 0,
    ) -> None:
        """*host*: ``hosts/ID``; *storage*: the ``[storage]`` table (None: files)."""
        self.dir = dir
        self.state = dir / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        self.run_dir = AGENT_RUN_ROOT / hashlib.sha256(str(self.state).encode()).hexdigest()[:10]
        cred = dir / "credential"
        cred.write_text(credential)
        cred.chmod(0o600)  # the agent refuses a credential others can read
        lines = [
            'power_driver = "qemu"',
            f'probe_kernel = "{probe_kernel}"',
            f'run_dir = "{self.run_dir}"',
            "server_memory_mib = 512",
            "shutdown_grace = 1.0",
            "resync = 0.5",
            "max_backoff = 1.0",
        ]
        if local_disk_gib:
            lines += ["[[local_disks]]", 'name = "nvme0"', f"size_gib = {local_disk_gib}"]
        if storage:
            lines.append("[storage]")
            lines += [f'{key} = "{value}"' for key, value in storage.items()]
        toml = dir / "agent.toml"
        toml.write_text("\n".join(lines) + "\n")
        self.log = dir / "agent.log"
        self.argv = [
            sys.executable, "-m", "host_agent.main",
            "--control-plane", f"127.0.0.1:{port}",
            "--host-id", host.split("/")[-1],
            "--credential-file", str(cred),
            "--state-dir", str(self.state),
            "--config", str(toml),
            *tls_flags(default_pki().client_tls()),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)

    def server_pids(self) -> list[int]:
        """QEMU pids of this host's servers."""
        pids = []
        for pidfile in self.state.glob("instances/*/qemu.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pidfile.read_text()))
        return pids

    def backend_pids(self) -> list[int]:
        pids = []
        for pidfile in self.run_dir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pidfile.read_text()))
        return pids

    def rbd_clients(self) -> dict[str, str]:
        """RBD image -> the Ceph client address its back-end uses (from its stats)."""
        out: dict[str, str] = {}
        for stats in self.run_dir.glob("*.stats"):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(stats.read_text())
                if data.get("rbd_client_address"):
                    out[stats.stem] = str(data["rbd_client_address"])
        return out

    def kill(self) -> None:
        """SIGKILL the agent, its servers and its back-ends (the host dies)."""
        victims = self.server_pids() + self.backend_pids()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the agent and whatever it left running (test clean-up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        kill_processes_under(self.state, self.run_dir)

"""The agent's settings: command-line flags over a TOML file over defaults.

The file describes the host as the card finds it (for emulated hosts the
inventory cannot be probed, so it is declared here)::

    power_driver = "qemu"            # or "fake" (no server; scale tests)
    devices = true                   # images, disks, back-ends (default: false with "fake")
    cpus = 64                        # the server's inventory, reported at Register
    memory_gib = 256
    zone = "zone-a"
    rack = "r1"
    underlay_address = "192.0.2.10"  # the card's VXLAN tunnel endpoint
    card_cpus = 1                    # CPUs kept for the card (QEMU's vCPUs avoid them)
    netns = "bmaas-host1"            # where TAPs, bridges and VXLAN live (emulated hosts)
    nic_mtu = 1450                   # MTU given to guests by DHCP
    server_memory_mib = 512          # the stand-in server's RAM
    server_cpus = 1
    shutdown_grace = 3.0             # seconds a stop waits for the OS before cutting power
    image_cache_gib = 20             # bound of the boot-image cache (least recently used go)
    [[local_disks]]                  # instance-store disks, wiped between tenants
    name = "nvme0"
    size_gib = 100
    [storage]                        # where cloud disks live (default: files)
    backend = "rbd"                  # "file" (volume_dir) or "rbd" (a Ceph pool)
    pool = "bmaas"
    ceph_conf = "/etc/ceph/ceph.conf"
    client_id = "admin"

Paths under ``--state-dir`` unless set: ``images/`` (image cache),
``volumes/`` (cloud disks; point several agents at one directory to let a
volume move between hosts), ``local/`` (local disks), ``instances/``
(per-server files).  Sockets go to ``run_dir`` (default
``/run/bmaas-agent/<host>``; a unix socket path has 108 bytes).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bmaas_tls import ClientTls, TlsError, channel_credentials


class ConfigError(Exception):
    """The configuration is unusable (the message names the setting)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalDisk:
    name: str
    size_gib: int
    kind: str = "nvme"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    """``[storage]``: ``file`` (disks are files on this host) or ``rbd``."""

    backend: str = "file"
    pool: str = ""
    ceph_conf: Path | None = None
    client_id: str = "admin"

    @property
    def rbd(self) -> bool:
        return self.backend == "rbd"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    host_id: str
    endpoints: tuple[str, ...]
    credential: str
    state_dir: Path
    power_driver: str = "qemu"
    #: run the data plane (image cache, disks, back-ends); None: only with a real server
    devices_: bool | None = None
    cpus: int = 4
    memory_gib: int = 8
    zone: str = ""
    rack: str = ""
    underlay_address: str = ""
    card_cpus: int = 0
    #: the network namespace of the host's card side (TAPs, bridges, VXLAN);
    #: "" for the agent's own namespace.  Emulated hosts get one each.
    netns: str = ""
    #: the MTU the card gives guests (DHCP option 26): the underlay's minus VXLAN's 50
    nic_mtu: int = 1450
    server_memory_mib: int = 512
    server_cpus: int = 1
    shutdown_grace: float = 3.0
    #: bound of the boot-image cache in GiB; least recently used images are deleted
    image_cache_gib: float = 20.0
    local_disks: tuple[LocalDisk, ...] = ()
    storage: StorageSettings = field(default_factory=StorageSettings)
    image_dir_: Path | None = None
    volume_dir_: Path | None = None
    run_dir_: Path | None = None
    metrics: str = ""
    #: not used by the qemu driver any more: it decides KVM or TCG by running
    #: the UEFI firmware under KVM once (``power.accel``); kept for old configs
    probe_kernel: Path | None = None
    #: seconds between level-triggered passes when nothing else wakes the reconciler
    resync: float = 2.0
    #: longest wait between reconnect attempts
    max_backoff: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: how the link reaches the control plane (``--ca``, ``--cert``/``--key``,
    #: ``--insecure``); default: TLS trusting the system's roots
    tls: ClientTls = field(default_factory=ClientTls)

    @property
    def devices(self) -> bool:
        return self.devices_ if self.devices_ is not None else self.power_driver != "fake"

    @property
    def image_dir(self) -> Path:
        return self.image_dir_ or self.state_dir / "images"

    @property
    def volume_dir(self) -> Path:
        return self.volume_dir_ or self.state_dir / "volumes"

    @property
    def run_dir(self) -> Path:
        return self.run_dir_ or Path("/run/bmaas-agent") / self.host_id


_FIELDS = {
    "power_driver": str,
    "cpus": int,
    "memory_gib": int,
    "zone": str,
    "rack": str,
    "underlay_address": str,
    "card_cpus": int,
    "netns": str,
    "nic_mtu": int,
    "server_memory_mib": int,
    "server_cpus": int,
    "shutdown_grace": float,
    "image_cache_gib": float,
    "resync": float,
    "max_backoff": float,
    "metrics": str,
}
_PATHS = {
    "image_dir": "image_dir_",
    "volume_dir": "volume_dir_",
    "run_dir": "run_dir_",
    "probe_kernel": "probe_kernel",
}


def load(
    *,
    host_id: str,
    endpoints: str,
    credential: str,
    state_dir: Path,
    file: Path | None = None,
    metrics: str = "",
    ca: Path | None = None,
    cert: Path | None = None,
    cert_key: Path | None = None,
    insecure: bool = False,
) -> AgentConfig:
    """Build the config; every problem is a ``ConfigError`` naming the setting."""
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ConfigError(f"--config {file}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"--config {file}: not a UTF-8 text file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {file}: {exc}") from exc
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FIELDS:
            kind = _FIELDS[key]
            if isinstance(value, bool):  # TOML true/false: an int to Python, never a number here
                raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
            if kind is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, kind):
                raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
            kwargs[key] = value
        elif key == "devices":
            if not isinstance(value, bool):
                raise ConfigError(f"devices: expected true or false, got {value!r}")
            kwargs["devices_"] = value
        elif key in _PATHS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}: expected a path, got {value!r}")
            kwargs[_PATHS[key]] = Path(value)
        elif key == "local_disks":
            if not isinstance(value, list):
                raise ConfigError(f"local_disks: expected a list of [[local_disks]], got {value!r}")
            kwargs["local_disks"] = tuple(_disk(d) for d in value)
        elif key == "storage":
            kwargs["storage"] = _storage(value)
        else:
            raise ConfigError(f"unknown setting {key!r}")
    eps = tuple(e.strip() for e in endpoints.split(",") if e.strip())
    if not eps:
        raise ConfigError("--control-plane: give at least one HOST:PORT")
    for ep in eps:
        host, _, port = ep.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--control-plane: {ep!r} is not HOST:PORT")
    if metrics:
        kwargs["metrics"] = metrics
    if kwargs.get("image_cache_gib", 1.0) <= 0:
        raise ConfigError(f"image_cache_gib: must be positive, got {kwargs['image_cache_gib']}")
    if kwargs.get("power_driver", "qemu") not in ("qemu", "fake"):
        raise ConfigError(f"power_driver: {kwargs['power_driver']!r} is not 'qemu' or 'fake'")
    if not host_id or "/" in host_id:
        raise ConfigError("--host-id: give the host's id (as enrolled), e.g. host-1")
    if not credential.startswith(f"{host_id}."):
        raise ConfigError(f"the credential is not for host {host_id!r}")
    try:
        tls = ClientTls(ca=ca, cert=cert, key=cert_key, insecure=insecure)
        if not insecure:
            channel_credentials(tls)  # every file readable now, not at the first connect
    except TlsError as exc:
        raise ConfigError(str(exc)) from None
    return AgentConfig(
        host_id=host_id,
        endpoints=eps,
        credential=credential,
        state_dir=state_dir,
        tls=tls,
        **kwargs,
    )


def _disk(raw: Any) -> LocalDisk:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise ConfigError(f"local_disks: each entry needs a name, got {raw!r}")
    size = raw.get("size_gib")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ConfigError(f"local_disks.{raw['name']}: size_gib must be a positive integer")
    return LocalDisk(name=raw["name"], size_gib=size, kind=str(raw.get("kind", "nvme")))


def _storage(raw: Any) -> StorageSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"storage: expected a [storage] table, got {raw!r}")
    for key in raw:
        if key not in ("backend", "pool", "ceph_conf", "client_id"):
            raise ConfigError(f"storage: unknown setting {key!r}")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise ConfigError(f"storage.{key}: expected a string, got {value!r}")
    backend = raw.get("backend", "file")
    if backend not in ("file", "rbd"):
        raise ConfigError(f"storage.backend: {backend!r} is not 'file' or 'rbd'")
    if backend == "file":
        return StorageSettings()
    for key in ("pool", "ceph_conf"):
        if not raw.get(key):
            raise ConfigError(f'storage.{key}: required with backend = "rbd"')
    return StorageSettings(
        backend="rbd",
        pool=raw["pool"],
        ceph_conf=Path(raw["ceph_conf"]),
        client_id=raw.get("client_id") or "admin",
    )

"""A real single-node Ceph cluster (one monitor, one bluestore OSD) in a temp dir.

``CephCluster.start()`` does, with the Debian binaries (``ceph-mon``,
``ceph-osd``, ``monmaptool``, ``ceph-authtool``) and librados (python3-rados)
for every command a ``ceph`` CLI would send:

1. writes ``ceph.conf`` (``conf_path``): one monitor on a free loopback port
   (msgr v2 only), ``auth * required = none``, ``osd pool default size = 1``,
   every daemon's data, run and log files under the temp dir, small caches;
2. makes the monitor's store (``ceph-mon --mkfs``) and runs it in the
   foreground as our child (no manager: RBD I/O does not need one);
3. allocates OSD 0 (``osd new``), makes its bluestore on a sparse file of
   ``osd_size`` bytes (2 GiB) and runs it, waits until the map says it is up;
4. creates ``pool`` with the ``rbd`` application and initialises it for RBD
   (a write: it returns once the pool's placement groups are active; without a
   manager ``pg stat`` says nothing, so there is nothing else to poll).

``stop()`` SIGTERMs (then SIGKILLs) the two daemons it started, by pid, and
removes the temp dir.  A missing binary or a daemon that exits while starting
is a ``StartError`` with the tail of its log, never a skip.

Clients: ``conf_path`` and ``pool`` are what ``offload-blk --rbd`` and
``qemu-storage-daemon``'s rbd driver are given; tests create and inspect
images without the CLIs through ``rados_client()``, ``create_image``,
``image_size``, ``image_exists``, ``read_image``, ``write_image``,
``resize_image``, ``lock_owners``, ``remove_image`` and
``mon_command``.

``CephCluster(data_dir=..., detached=True)`` (the demo's) keeps its files
where the caller says (``stop()`` then leaves them) and runs both daemons in
their own session, so they outlive the launcher; the caller records ``pids``
and ``conf_path`` and stops them later, from any process, with
``tools.region.process.stop_process``.

``rados`` and ``rbd`` (Debian's python3-rados/python3-rbd, linked into the
venv by ``make dev``) are imported by the methods that use them, not at the
top: ``tests/conftest.py`` imports this module for every test, and a test
run that never asks for ``ceph`` must not need them.

The OSD drops a dead client's watch after ``watch_timeout`` seconds (5, not
Ceph's 30): a back-end SIGKILLed in a test holds its image's exclusive lock
until then, and the restarted one can take it over only afterwards.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.region.ports import free_port
from tools.region.process import StartError, log_tail, spawn, stop_process

__all__ = ["CephCluster"]

_BINARIES = ("ceph-mon", "ceph-osd", "monmaptool", "ceph-authtool")
#: features of a cloud disk: layering, exclusive-lock, object-map, fast-diff, deep-flatten
DEFAULT_FEATURES = 1 | 4 | 8 | 16 | 32


class CephCluster:
    """One ceph-mon and one ceph-osd on loopback, started and removed as a unit."""

    def __init__(
        self,
        *,
        pool: str = "bmaas",
        osd_size: int = 2 << 30,
        watch_timeout: int = 5,
        base_dir: Path | None = None,
        data_dir: Path | None = None,
        detached: bool = False,
    ) -> None:
        missing = [b for b in _BINARIES if shutil.which(b) is None]
        if missing:
            names = ", ".join(missing)
            raise StartError(f"{names} not found on PATH (make system-deps installs Ceph)")
        self.pool = pool
        self.osd_size = osd_size
        self.watch_timeout = watch_timeout
        #: a temp dir is this cluster's to remove; a given one is the caller's
        self._owns_dir = data_dir is None
        if data_dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="bmaas-ceph-", dir=base_dir))
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            if any(data_dir.iterdir()):
                raise StartError(f"{data_dir} is not empty")
            self.dir = data_dir
        self.detached = detached
        self.conf_path = self.dir / "ceph.conf"
        self.fsid = str(uuid.uuid4())
        self.mon_port = free_port()
        self._mon: subprocess.Popen[bytes] | None = None
        self._osd: subprocess.Popen[bytes] | None = None
        #: seconds ``start()`` took (measured: docs/testing.md)
        self.start_seconds = 0.0

    @property
    def mon_addr(self) -> str:
        return f"127.0.0.1:{self.mon_port}"

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in (self._mon, self._osd) if p is not None)

    # -- start and stop --------------------------------------------------------

    def start(self, timeout: float = 120.0) -> CephCluster:
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._write_conf()
            self._start_mon(deadline)
            self._start_osd(deadline)
            self._create_pool(deadline)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def _write_conf(self) -> None:
        d = self.dir
        for sub in ("mon", "osd", "run", "log"):
            (d / sub).mkdir()
        self.conf_path.write_text(
            f"""[global]
fsid = {self.fsid}
mon host = v2:{self.mon_addr}
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
run dir = {d}/run
admin socket = {d}/run/$name.$pid.asok
log file = {d}/log/$name.log
keyring = {d}/keyring
rados mon op timeout = 15
client mount timeout = 15

[mon]
mon data = {d}/mon
mon cluster log file = {d}/log/cluster.log

[osd]
osd data = {d}/osd
osd objectstore = bluestore
bluestore block path = {d}/osd/block.img
bluestore block create = true
bluestore block size = {self.osd_size}
bluestore cache size = 134217728
osd memory target = 939524096
osd client watch timeout = {self.watch_timeout}
osd heartbeat grace = 20
"""
        )

    def _run(self, *argv: str) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StartError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")

    def _start_mon(self, deadline: float) -> None:
        d, conf = self.dir, str(self.conf_path)
        keyring = d / "keyring"
        self._run(
            "ceph-authtool", "--create-keyring", str(keyring), "--gen-key", "-n", "mon.",
            "--cap", "mon", "allow *",
        )  # fmt: skip
        self._run(
            "monmaptool", "--create", "--fsid", self.fsid,
            "--addv", "a", f"[v2:{self.mon_addr}]", str(d / "monmap"),
        )  # fmt: skip
        self._run(
            "ceph-mon", "-c", conf, "--mkfs", "-i", "a",
            "--monmap", str(d / "monmap"), "--keyring", str(keyring),
        )  # fmt: skip
        self._mon = spawn(
            ["ceph-mon", "-f", "-c", conf, "-i", "a"],
            log=d / "log" / "mon.out",
            detached=self.detached,
        )
        self._poll(deadline, "ceph-mon", lambda: self._try_command({"prefix": "status"}))

    def _start_osd(self, deadline: float) -> None:
        conf = str(self.conf_path)
        osd_uuid = str(uuid.uuid4())
        out = self.mon_command({"prefix": "osd new", "uuid": osd_uuid})
        osd_id = str(int(out.strip() or b"0"))
        self._run("ceph-osd", "-c", conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        log = self.dir / "log" / "osd.out"
        argv = ["ceph-osd", "-f", "-c", conf, "-i", osd_id]
        self._osd = spawn(argv, log=log, detached=self.detached)
        self._poll(deadline, "ceph-osd", self._osd_up)

    def _create_pool(self, deadline: float) -> None:
        import rbd

        self.mon_command({"prefix": "osd pool create", "pool": self.pool, "pg_num": 8})
        self.mon_command({"prefix": "osd pool application enable", "pool": self.pool, "app": "rbd"})
        with self.ioctx() as ioctx:
            rbd.RBD().pool_init(ioctx, True)

    def _poll(self, deadline: float, what: str, ready: Any) -> None:
        while True:
            for name, proc in (("ceph-mon", self._mon), ("ceph-osd", self._osd)):
                if proc is not None and proc.poll() is not None:
                    raise StartError(
                        f"{name} exited with {proc.returncode}: {self._log(name.split('-')[1])}"
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                raise StartError(f"{what} not ready in time: {self._log('osd')}")
            time.sleep(0.2)

    def _log(self, daemon: str) -> str:
        logs = sorted((self.dir / "log").glob(f"{daemon}*"))
        return "\n".join(log_tail(p, 10) for p in logs)

    def _osd_up(self) -> bool:
        try:
            dump = json.loads(self.mon_command({"prefix": "osd dump", "format": "json"}))
        except StartError:
            return False
        return any(o.get("up") == 1 for o in dump.get("osds", []))

    def stop_mon(self) -> None:
        """Stop the monitor only (fault tests); ``restart_mon`` brings it back."""
        if self._mon is not None and self._mon.poll() is None:
            stop_process(self._mon.pid, timeout=5.0)
        self._mon = None

    def restart_mon(self, timeout: float = 60.0) -> None:
        """Start the monitor again on its address and wait until it answers."""
        if self._mon is not None and self._mon.poll() is None:
            return
        self._mon = spawn(
            ["ceph-mon", "-f", "-c", str(self.conf_path), "-i", "a"],
            log=self.dir / "log" / "mon.out",
            detached=self.detached,
        )
        deadline = time.monotonic() + timeout
        self._poll(deadline, "ceph-mon", lambda: self._try_command({"prefix": "status"}))

    def stop(self) -> None:
        """Stop the daemons we started (by pid); remove the dir if we made it."""
        for proc in (self._osd, self._mon):
            if proc is not None and proc.poll() is None:
                stop_process(proc.pid, timeout=5.0)
        self._osd = self._mon = None
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> CephCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------

    @contextlib.contextmanager
    def rados_client(self, name: str = "client.admin") -> Iterator[Any]:
        """A connected ``rados.Rados`` (shut down on exit)."""
        import rados

        cluster = rados.Rados(conffile=str(self.conf_path), name=name)
        cluster.connect(timeout=15)
        try:
            yield cluster
        finally:
            cluster.shutdown()

    @contextlib.contextmanager
    def ioctx(self) -> Iterator[Any]:
        """An I/O context on ``pool``."""
        with self.rados_client() as cluster:
            ioctx = cluster.open_ioctx(self.pool)
            try:
                yield ioctx
            finally:
                ioctx.close()

    def _try_command(self, cmd: dict[str, Any]) -> bool:
        try:
            self.mon_command(cmd)
        except StartError:
            return False
        return True

    def mon_command(self, cmd: dict[str, Any]) -> bytes:
        """Send one monitor command (what ``ceph ...`` would); returns its output."""
        import rados

        try:
            with self.rados_client() as cluster:
                ret, out, err = cluster.mon_command(json.dumps(cmd), b"", timeout=15)
        except rados.Error as exc:
            raise StartError(f"{cmd['prefix']}: {exc}") from exc
        if ret != 0:
            raise StartError(f"{cmd['prefix']} failed ({ret}): {err}")
        return bytes(out)

    def create_image(self, name: str, size: int, *, features: int = DEFAULT_FEATURES) -> None:
        import rbd

        with self.ioctx() as ioctx:
            rbd.RBD().create(ioctx, name, size, old_format=False, features=features)

    def remove_image(self, name: str, timeout: float = 30.0) -> None:
        """Remove ``name`` (gone already is fine); a dead client's watch is waited out."""
        import rbd

        deadline = time.monotonic() + timeout
        with self.ioctx() as ioctx:
            while True:
                try:
                    rbd.RBD().remove(ioctx, name)
                except rbd.ImageNotFound:
                    return
                except rbd.ImageBusy:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
                else:
                    return

    def image_exists(self, name: str) -> bool:
        import rbd

        with self.ioctx() as ioctx:
            return name in rbd.RBD().list(ioctx)

    def image_size(self, name: str) -> int:
        import rbd

        with self.ioctx() as ioctx, rbd.Image(ioctx, name, read_only=True) as image:
            return int(image.size())

    def resize_image(self, name: str, size: int) -> None:
        import rbd

        with self.ioctx() as ioctx, rbd.Image(ioctx, name) as image:
            image.resize(size)

    def read_image(self, name: str, offset: int, length: int) -> bytes:
        import rbd

        with self.ioctx() as ioctx, rbd.Image(ioctx, name, read_only=True) as image:
            return bytes(image.read(offset, length))

    def write_image(self, name: str, offset: int, data: bytes) -> None:
        import rbd

        with self.ioctx() as ioctx, rbd.Image(ioctx, name) as image:
            image.write(data, offset)

    def lock_owners(self, name: str) -> list[str]:
        """Addresses of the clients holding ``name``'s exclusive lock."""
        import rbd

        with self.ioctx() as ioctx, rbd.Image(ioctx, name, read_only=True) as image:
            lockers = image.list_lockers()
        if not lockers:
            return []
        return [str(addr) for _client, _cookie, addr in lockers["lockers"]]

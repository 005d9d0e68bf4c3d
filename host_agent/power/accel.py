"""Pick QEMU's accelerator: KVM when it really boots a kernel, TCG otherwise.

``/dev/kvm`` existing, KVM_CREATE_VM succeeding, even SeaBIOS running under
KVM does not mean a Linux guest boots: on some nested or restricted hosts
the kernel hangs as soon as it leaves the boot stub.  So the probe is the
real thing: QEMU with ``-accel kvm`` boots the given kernel with an early
serial console, and KVM counts as working when ``Linux version`` appears
within a few seconds (well under one second on working KVM).  The QEMU
process is killed either way.

The verdict is cached in memory and in a small file keyed by the machine's
boot id and the kernel path, so one machine boot pays for the probe once.
``BMAAS_ACCEL=kvm|tcg`` overrides it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

_PROBE_TIMEOUT_S = 8.0
_BANNER = b"Linux version"
_memo: dict[Path, bool] = {}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _cache_file(kernel: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(f"{_boot_id()}:{kernel.resolve()}".encode()).hexdigest()[:16]
    return cache_dir / f"kvm-probe-{key}"


def probe_kvm(kernel: Path, *, qemu: str = "qemu-system-x86_64") -> bool:
    """Boot *kernel* under KVM and report whether it reached ``start_kernel``."""
    binary = shutil.which(qemu)
    if binary is None or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with tempfile.TemporaryDirectory(prefix="bmaas-kvm-probe-") as tmp:
        log = Path(tmp) / "serial.log"
        argv = [
            binary,
            "-accel", "kvm",
            "-cpu", "host",
            "-nodefaults",
            "-display", "none",
            "-m", "128",
            "-kernel", str(kernel),
            "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1",
            "-chardev", f"file,id=ser,path={log}",
            "-serial", "chardev:ser",
            "-no-reboot",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + _PROBE_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if log.exists() and _BANNER in log.read_bytes():
                    return True
                time.sleep(0.05)
            return log.exists() and _BANNER in log.read_bytes()
        finally:
            proc.kill()
            proc.wait()


def accelerator(kernel: Path, *, cache_dir: Path | None = None) -> str:
    """``"kvm"`` or ``"tcg"`` for booting *kernel*, honouring ``BMAAS_ACCEL``."""
    forced = os.environ.get("BMAAS_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if kernel not in _memo:
        cached = _cache_file(kernel, cache_dir) if cache_dir is not None else None
        if cached is not None and cached.exists():
            _memo[kernel] = cached.read_text().strip() == "kvm"
        else:
            _memo[kernel] = probe_kvm(kernel)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text("kvm" if _memo[kernel] else "tcg")
    return "kvm" if _memo[kernel] else "tcg"

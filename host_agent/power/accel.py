"""Pick QEMU's accelerator: KVM when it really boots what the server boots, TCG otherwise.

``/dev/kvm`` existing, KVM_CREATE_VM succeeding, even a Linux kernel booting
under KVM does not mean a server boots: on some hosts OVMF stops at its
first instructions with "KVM internal error. Suberror: 1 ... emulation
failure", on others QEMU cannot even set the CPU's MSRs.  So the probe is
the real thing, run once:

- ``probe_kvm_firmware(code, vars_template)`` starts QEMU with ``-accel
  kvm`` and the UEFI firmware instances boot (a scratch copy of the variable
  store, no disk) and waits for OVMF's boot manager to speak on the serial
  console (``BdsDxe``: the firmware ran its whole start-up, which takes a
  second or two under KVM).  QEMU exiting, the firmware stopping or silence
  for ``_PROBE_TIMEOUT_S`` is a failure, with QEMU's own message as the
  reason.  The qemu power driver uses this (``firmware_accelerator``).
- ``probe_kvm(kernel)`` does the same with a direct kernel boot (``Linux
  version`` on an early console), for tests that boot a kernel without
  firmware (``accelerator``).

The QEMU process is killed either way.  A verdict is cached in memory and
in a small file keyed by the machine's boot id and what was probed, so one
machine boot pays for each probe once.  ``BMAAS_ACCEL=kvm|tcg`` overrides
both.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("host_agent.power.accel")

_PROBE_TIMEOUT_S = 8.0
_BANNER = b"Linux version"
_FIRMWARE_BANNER = b"BdsDxe"
_memo: dict[str, bool] = {}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _cache_file(what: str, cache_dir: Path) -> Path:
    key = hashlib.sha256(f"{_boot_id()}:{what}".encode()).hexdigest()[:16]
    return cache_dir / f"kvm-probe-{key}"


def _run_probe(argv_tail: list[str], banner: bytes, *, qemu: str) -> tuple[bool, str]:
    """Start ``qemu -accel kvm`` with *argv_tail*; wait for *banner* on the serial port."""
    binary = shutil.which(qemu)
    if binary is None:
        return False, f"{qemu} not found on PATH"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm cannot be opened"
    with tempfile.TemporaryDirectory(prefix="bmaas-kvm-probe-") as tmp:
        serial, stderr = Path(tmp) / "serial.log", Path(tmp) / "qemu.log"
        argv = [
            binary,
            "-accel", "kvm",
            "-cpu", "host",
            "-nodefaults",
            "-display", "none",
            "-chardev", f"file,id=ser,path={serial}",
            "-serial", "chardev:ser",
            "-no-reboot",
            *argv_tail,
        ]  # fmt: skip
        with stderr.open("wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + _PROBE_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                if serial.exists() and banner in serial.read_bytes():
                    return True, ""
                time.sleep(0.05)
            if serial.exists() and banner in serial.read_bytes():
                return True, ""
            said = stderr.read_text(errors="replace").strip().splitlines()
            detail = said[0][:300] if said else "no message"
            if proc.poll() is not None:
                return False, f"QEMU exited ({proc.returncode}): {detail}"
            return False, f"nothing on the console within {_PROBE_TIMEOUT_S:.0f} s ({detail})"
        finally:
            proc.kill()
            proc.wait()


def probe_kvm_firmware(
    code: Path, vars_template: Path, *, qemu: str = "qemu-system-x86_64"
) -> tuple[bool, str]:
    """Run the UEFI firmware under KVM: (True, "") when its boot manager starts,
    else (False, why not)."""
    if not code.exists() or not vars_template.exists():
        return False, f"no firmware at {code} / {vars_template}"
    with tempfile.TemporaryDirectory(prefix="bmaas-kvm-probe-vars-") as tmp:
        scratch = Path(tmp) / "vars.fd"
        shutil.copyfile(vars_template, scratch)
        tail = [
            "-m", "128",
            "-machine", "q35,pflash0=fw-code,pflash1=fw-vars",
            "-blockdev", f"node-name=fw-code,driver=file,filename={code},read-only=on",
            "-blockdev", f"node-name=fw-vars,driver=file,filename={scratch}",
        ]  # fmt: skip
        return _run_probe(tail, _FIRMWARE_BANNER, qemu=qemu)


def probe_kvm(kernel: Path, *, qemu: str = "qemu-system-x86_64") -> bool:
    """Boot *kernel* under KVM and report whether it reached ``start_kernel``."""
    tail = [
        "-m", "128",
        "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1",
    ]  # fmt: skip
    ok, _ = _run_probe(tail, _BANNER, qemu=qemu)
    return ok


def _verdict(what: str, probe: Callable[[], bool], cache_dir: Path | None) -> str:
    forced = os.environ.get("BMAAS_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if what not in _memo:
        cached = _cache_file(what, cache_dir) if cache_dir is not None else None
        if cached is not None and cached.exists():
            _memo[what] = cached.read_text().strip() == "kvm"
        else:
            _memo[what] = probe()
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text("kvm" if _memo[what] else "tcg")
    return "kvm" if _memo[what] else "tcg"


def kernel_key(kernel: Path) -> str:
    """What a kernel probe's verdict is cached under."""
    return f"kernel:{kernel.resolve()}"


def firmware_key(code: Path) -> str:
    """What a firmware probe's verdict is cached under."""
    return f"firmware:{code.resolve()}"


def accelerator(kernel: Path, *, cache_dir: Path | None = None) -> str:
    """``"kvm"`` or ``"tcg"`` for booting *kernel*, honouring ``BMAAS_ACCEL``."""
    return _verdict(kernel_key(kernel), lambda: probe_kvm(kernel), cache_dir)


def firmware_accelerator(code: Path, vars_template: Path, *, cache_dir: Path | None = None) -> str:
    """``"kvm"`` or ``"tcg"`` for a server booting the UEFI firmware *code*."""

    def probe() -> bool:
        ok, why = probe_kvm_firmware(code, vars_template)
        if not ok:
            log.warning("KVM does not run the UEFI firmware here (%s): using TCG", why)
        return ok

    return _verdict(firmware_key(code), probe, cache_dir)

"""The KVM probe against a real QEMU: a firmware that cannot run is a failure
with a reason, whatever this machine's KVM does (absent, broken, or working
but given a firmware of zeros, which never reaches a boot manager)."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_agent.power import accel
from host_agent.power.qemu import OVMF_CODE, OVMF_VARS

pytestmark = pytest.mark.integration


def test_a_firmware_that_cannot_run_is_refused_with_a_reason(tmp_path: Path) -> None:
    code, template = tmp_path / "code.fd", tmp_path / "vars.fd"
    code.write_bytes(b"\0" * (4 << 20))
    template.write_bytes(b"\0" * (4 << 20))
    ok, why = accel.probe_kvm_firmware(code, template)
    assert not ok
    assert why  # one of: no /dev/kvm, QEMU exited (its message), nothing on the console


def test_the_verdict_on_this_machines_firmware_is_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BMAAS_ACCEL", raising=False)
    monkeypatch.setattr(accel, "_memo", {})
    ok, _ = accel.probe_kvm_firmware(OVMF_CODE, OVMF_VARS)
    verdict = accel.firmware_accelerator(OVMF_CODE, OVMF_VARS, cache_dir=tmp_path)
    assert verdict == ("kvm" if ok else "tcg")
    cached = accel._cache_file(accel.firmware_key(OVMF_CODE), tmp_path)
    assert cached.read_text() == verdict

"""Accelerator choice: override, cached verdict, and a probe that cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_agent.power import accel


def test_environment_overrides_the_probe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BMAAS_ACCEL", "kvm")
    assert accel.accelerator(tmp_path / "no-kernel") == "kvm"
    monkeypatch.setenv("BMAAS_ACCEL", "tcg")
    assert accel.accelerator(tmp_path / "no-kernel") == "tcg"


def test_cached_verdict_is_used_without_probing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BMAAS_ACCEL", raising=False)
    monkeypatch.setattr(accel, "_memo", {})
    kernel = tmp_path / "vmlinuz"
    accel._cache_file(accel.kernel_key(kernel), tmp_path).write_text("kvm")

    def no_probe(_: Path) -> bool:
        raise AssertionError("probed despite a cached verdict")

    monkeypatch.setattr(accel, "probe_kvm", no_probe)
    assert accel.accelerator(kernel, cache_dir=tmp_path) == "kvm"


def test_probe_result_is_cached_per_boot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BMAAS_ACCEL", raising=False)
    monkeypatch.setattr(accel, "_memo", {})
    calls: list[Path] = []

    def probe(kernel: Path) -> bool:
        calls.append(kernel)
        return False

    monkeypatch.setattr(accel, "probe_kvm", probe)
    kernel = tmp_path / "vmlinuz"
    assert accel.accelerator(kernel, cache_dir=tmp_path / "c") == "tcg"
    assert accel._cache_file(accel.kernel_key(kernel), tmp_path / "c").read_text() == "tcg"
    monkeypatch.setattr(accel, "_memo", {})
    assert accel.accelerator(kernel, cache_dir=tmp_path / "c") == "tcg"
    assert calls == [kernel]


def test_probe_without_qemu_says_no(tmp_path: Path) -> None:
    assert accel.probe_kvm(tmp_path / "vmlinuz", qemu="no-such-qemu-binary") is False


def test_firmware_probe_failure_falls_back_to_tcg_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("BMAAS_ACCEL", raising=False)
    monkeypatch.setattr(accel, "_memo", {})
    reason = "nothing on the console within 8 s (KVM internal error. Suberror: 1)"
    calls: list[Path] = []

    def probe(code: Path, vars_template: Path) -> tuple[bool, str]:
        calls.append(code)
        return False, reason

    monkeypatch.setattr(accel, "probe_kvm_firmware", probe)
    code = tmp_path / "OVMF_CODE.fd"
    assert accel.firmware_accelerator(code, tmp_path / "vars", cache_dir=tmp_path) == "tcg"
    assert reason in caplog.text
    assert accel._cache_file(accel.firmware_key(code), tmp_path).read_text() == "tcg"
    # a kernel that boots under KVM says nothing about the firmware, and back
    monkeypatch.setattr(accel, "probe_kvm", lambda _k: True)
    assert accel.accelerator(tmp_path / "vmlinuz", cache_dir=tmp_path) == "kvm"
    assert accel.firmware_accelerator(code, tmp_path / "vars", cache_dir=tmp_path) == "tcg"
    assert calls == [code]


def test_firmware_probe_that_passes_picks_kvm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BMAAS_ACCEL", raising=False)
    monkeypatch.setattr(accel, "_memo", {})
    monkeypatch.setattr(accel, "probe_kvm_firmware", lambda _c, _v: (True, ""))
    assert accel.firmware_accelerator(tmp_path / "code", tmp_path / "vars") == "kvm"


def test_firmware_probe_without_firmware_says_why(tmp_path: Path) -> None:
    ok, why = accel.probe_kvm_firmware(tmp_path / "code.fd", tmp_path / "vars.fd")
    assert not ok
    assert "no firmware" in why

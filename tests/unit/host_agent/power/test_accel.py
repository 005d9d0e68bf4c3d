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
    accel._cache_file(kernel, tmp_path).write_text("kvm")

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
    assert accel._cache_file(kernel, tmp_path / "c").read_text() == "tcg"
    monkeypatch.setattr(accel, "_memo", {})
    assert accel.accelerator(kernel, cache_dir=tmp_path / "c") == "tcg"
    assert calls == [kernel]


def test_probe_without_qemu_says_no(tmp_path: Path) -> None:
    assert accel.probe_kvm(tmp_path / "vmlinuz", qemu="no-such-qemu-binary") is False

"""The server stand-in's QEMU command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_agent.power.qemu import (
    BlkDisk,
    NetNic,
    ServerSpec,
    UefiFirmware,
    build_argv,
    hotplug_bus,
    prepare_firmware,
)


def _spec(**kw: object) -> ServerSpec:
    return ServerSpec(name="s1", serial_log=Path("/tmp/s1.log"), **kw)  # type: ignore[arg-type]


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_stand_in_has_no_default_devices_and_shared_memfd_ram() -> None:
    argv = build_argv(_spec(memory_mib=512))
    assert "-nodefaults" in argv
    assert "memory-backend-memfd,id=ram0,size=512M,share=on" in _pairs(argv, "-object")
    assert "q35,memory-backend=ram0" in _pairs(argv, "-machine")
    assert _pairs(argv, "-serial") == ["chardev:serial0"]
    assert "file,id=serial0,path=/tmp/s1.log" in _pairs(argv, "-chardev")
    assert not any(a.startswith("-net") and a != "-netdev" for a in argv)


def test_only_vhost_user_devices_are_attached() -> None:
    argv = build_argv(
        _spec(
            accel="kvm",
            disks=(BlkDisk(Path("/run/b0.sock"), num_queues=2, bootindex=1),),
            nics=(NetNic(Path("/run/n0.sock"), mac="52:54:00:00:00:01", queues=2),),
        )
    )
    devices = _pairs(argv, "-device")
    assert devices == [
        "vhost-user-blk-pci,chardev=blk0,id=disk0,num-queues=2,bootindex=1",
        "virtio-net-pci,netdev=netdev0,id=nic0,mac=52:54:00:00:00:01,mq=on",
    ]
    assert "vhost-user,id=netdev0,chardev=net0,queues=2" in _pairs(argv, "-netdev")
    chardevs = _pairs(argv, "-chardev")
    assert "socket,id=blk0,path=/run/b0.sock,reconnect=1" in chardevs
    assert "socket,id=net0,path=/run/n0.sock,reconnect=1" in chardevs


def test_nics_get_no_msix_under_tcg_only() -> None:
    nic = NetNic(Path("/run/n0.sock"), mac="52:54:00:00:00:01")
    tcg = _pairs(build_argv(_spec(accel="tcg", nics=(nic,))), "-device")
    kvm = _pairs(build_argv(_spec(accel="kvm", nics=(nic,))), "-device")
    assert tcg == ["virtio-net-pci,netdev=netdev0,id=nic0,mac=52:54:00:00:00:01,vectors=0"]
    assert kvm == ["virtio-net-pci,netdev=netdev0,id=nic0,mac=52:54:00:00:00:01"]


def test_pvpanic_pauses_a_panicked_guest() -> None:
    argv = build_argv(_spec(pvpanic=True, hotplug_slots=1))
    assert _pairs(argv, "-device")[-1] == "pvpanic"
    assert _pairs(argv, "-action") == ["panic=pause"]
    assert "pvpanic" not in _pairs(build_argv(_spec()), "-device")
    assert _pairs(build_argv(_spec()), "-action") == []


@pytest.mark.parametrize(("accel", "cpu"), [("kvm", "host"), ("tcg", "max")])
def test_accelerator_selects_cpu_model(accel: str, cpu: str) -> None:
    argv = build_argv(_spec(accel=accel))
    assert _pairs(argv, "-accel") == [accel]
    assert _pairs(argv, "-cpu") == [cpu]


def test_unknown_accelerator_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown accelerator"):
        build_argv(_spec(accel="hvf"))


def test_kernel_boot_adds_append_and_initrd() -> None:
    argv = build_argv(_spec(kernel=Path("/k"), initrd=Path("/i"), append="console=ttyS0"))
    assert _pairs(argv, "-kernel") == ["/k"]
    assert _pairs(argv, "-initrd") == ["/i"]
    assert _pairs(argv, "-append") == ["console=ttyS0"]


def _firmware() -> UefiFirmware:
    return UefiFirmware(vars=Path("/srv/s1/vars.fd"), code=Path("/fw/code.fd"))


def test_firmware_boot_attaches_read_only_code_and_writable_vars_as_pflash() -> None:
    argv = build_argv(
        _spec(firmware=_firmware(), disks=(BlkDisk(Path("/run/b0.sock"), bootindex=0),))
    )
    assert "-kernel" not in argv
    assert "-initrd" not in argv
    assert "-append" not in argv
    assert _pairs(argv, "-machine") == ["q35,memory-backend=ram0,pflash0=fw-code,pflash1=fw-vars"]
    assert _pairs(argv, "-blockdev") == [
        "node-name=fw-code,driver=file,filename=/fw/code.fd,read-only=on",
        "node-name=fw-vars,driver=file,filename=/srv/s1/vars.fd",
    ]
    assert _pairs(argv, "-device") == [
        "vhost-user-blk-pci,chardev=blk0,id=disk0,num-queues=1,bootindex=0"
    ]


def test_firmware_and_kernel_together_are_rejected() -> None:
    with pytest.raises(ValueError, match="either firmware or kernel"):
        build_argv(_spec(firmware=_firmware(), kernel=Path("/k")))


def test_without_firmware_no_pflash_is_attached() -> None:
    argv = build_argv(_spec(kernel=Path("/k")))
    assert "-blockdev" not in argv
    assert _pairs(argv, "-machine") == ["q35,memory-backend=ram0"]


def test_hotplug_slots_are_root_ports_after_the_cold_plugged_devices() -> None:
    argv = build_argv(_spec(disks=(BlkDisk(Path("/run/b0.sock")),), hotplug_slots=3))
    devices = _pairs(argv, "-device")
    assert devices[0].startswith("vhost-user-blk-pci,")
    assert devices[1:] == [
        "pcie-root-port,id=hp0,chassis=1",
        "pcie-root-port,id=hp1,chassis=2",
        "pcie-root-port,id=hp2,chassis=3",
    ]
    assert [hotplug_bus(i) for i in range(3)] == ["hp0", "hp1", "hp2"]


def test_no_hotplug_slots_by_default_and_negative_is_rejected() -> None:
    assert not any(d.startswith("pcie-root-port") for d in _pairs(build_argv(_spec()), "-device"))
    with pytest.raises(ValueError, match="hotplug_slots"):
        build_argv(_spec(hotplug_slots=-1))


def test_prepare_firmware_copies_the_template_once(tmp_path: Path) -> None:
    template = tmp_path / "OVMF_VARS.fd"
    template.write_bytes(b"template")
    fw = UefiFirmware(vars=tmp_path / "s1" / "vars.fd", vars_template=template)
    prepare_firmware(fw)
    assert fw.vars.read_bytes() == b"template"
    fw.vars.write_bytes(b"boot entries the firmware wrote")
    prepare_firmware(fw)  # the server's NVRAM survives a power cycle
    assert fw.vars.read_bytes() == b"boot entries the firmware wrote"

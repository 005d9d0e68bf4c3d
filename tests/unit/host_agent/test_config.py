"""``host_agent.config.load``: defaults, every documented key, and each error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from host_agent.config import AgentConfig, ConfigError, LocalDisk, load

FULL_TOML = """\
power_driver = "fake"
devices = true
cpus = 64
memory_gib = 256
zone = "zone-a"
rack = "r1"
underlay_address = "192.0.2.10"
card_cpus = 1
netns = "bmaas-host1"
nic_mtu = 1400
server_memory_mib = 1024
server_cpus = 2
shutdown_grace = 7
image_cache_gib = 2
resync = 0.5
max_backoff = 9.5
metrics = "127.0.0.1:9100"
image_dir = "/srv/images"
volume_dir = "/srv/volumes"
run_dir = "/run/agent-x"
probe_kernel = "/boot/vmlinuz"

[[local_disks]]
name = "nvme0"
size_gib = 100

[[local_disks]]
name = "nvme1"
size_gib = 50
kind = "ssd"
"""


def _load(tmp_path: Path, toml: str | None = None, **overrides: Any) -> AgentConfig:
    file = None
    if toml is not None:
        file = tmp_path / "agent.toml"
        file.write_text(toml)
    args: dict[str, Any] = {
        "host_id": "host-1",
        "endpoints": "cp1:50051",
        "credential": "host-1.secret",
        "state_dir": tmp_path / "state",
        "file": file,
    }
    args.update(overrides)
    return load(**args)


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = _load(tmp_path)
    assert cfg.host_id == "host-1"
    assert cfg.endpoints == ("cp1:50051",)
    assert cfg.credential == "host-1.secret"
    assert cfg.power_driver == "qemu"
    assert cfg.devices is True  # qemu: a real server, so the data plane runs
    assert (cfg.cpus, cfg.memory_gib, cfg.card_cpus) == (4, 8, 0)
    assert (cfg.zone, cfg.rack, cfg.underlay_address, cfg.netns) == ("", "", "", "")
    assert cfg.nic_mtu == 1450
    assert (cfg.server_memory_mib, cfg.server_cpus) == (512, 1)
    assert cfg.shutdown_grace == 3.0
    assert cfg.image_cache_gib == 20.0
    assert (cfg.resync, cfg.max_backoff) == (2.0, 5.0)
    assert cfg.local_disks == ()
    assert cfg.metrics == ""
    assert cfg.probe_kernel is None
    assert cfg.image_dir == tmp_path / "state" / "images"
    assert cfg.volume_dir == tmp_path / "state" / "volumes"
    assert cfg.run_dir == Path("/run/bmaas-agent/host-1")


def test_fake_driver_defaults_to_no_devices(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'power_driver = "fake"\n')
    assert cfg.power_driver == "fake"
    assert cfg.devices is False


def test_every_documented_key(tmp_path: Path) -> None:
    cfg = _load(tmp_path, FULL_TOML)
    assert cfg.power_driver == "fake"
    assert cfg.devices is True  # explicit true wins over the fake driver's default
    assert (cfg.cpus, cfg.memory_gib) == (64, 256)
    assert (cfg.zone, cfg.rack) == ("zone-a", "r1")
    assert cfg.underlay_address == "192.0.2.10"
    assert cfg.card_cpus == 1
    assert cfg.netns == "bmaas-host1"
    assert cfg.nic_mtu == 1400
    assert (cfg.server_memory_mib, cfg.server_cpus) == (1024, 2)
    assert cfg.shutdown_grace == 7.0
    assert isinstance(cfg.shutdown_grace, float)  # an integer is taken for a float setting
    assert cfg.image_cache_gib == 2.0
    assert (cfg.resync, cfg.max_backoff) == (0.5, 9.5)
    assert cfg.metrics == "127.0.0.1:9100"
    assert cfg.image_dir == Path("/srv/images")
    assert cfg.volume_dir == Path("/srv/volumes")
    assert cfg.run_dir == Path("/run/agent-x")
    assert cfg.probe_kernel == Path("/boot/vmlinuz")
    assert cfg.local_disks == (
        LocalDisk(name="nvme0", size_gib=100, kind="nvme"),
        LocalDisk(name="nvme1", size_gib=50, kind="ssd"),
    )


def test_metrics_flag_overrides_the_file(tmp_path: Path) -> None:
    cfg = _load(tmp_path, 'metrics = "127.0.0.1:1"\n', metrics="0.0.0.0:9200")
    assert cfg.metrics == "0.0.0.0:9200"


def test_devices_false_is_kept(tmp_path: Path) -> None:
    assert _load(tmp_path, "devices = false\n").devices is False


def test_several_endpoints_parsed_in_order(tmp_path: Path) -> None:
    cfg = _load(tmp_path, endpoints=" cp2:1 , cp1:2,[::1]:3,, ")
    assert cfg.endpoints == ("cp2:1", "cp1:2", "[::1]:3")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("colour = 1\n", "unknown setting 'colour'"),
        ("cpus = true\n", "cpus: expected int, got True"),
        ("cpus = '64'\n", "cpus: expected int, got '64'"),
        ("memory_gib = 1.5\n", "memory_gib: expected int, got 1.5"),
        ("zone = 3\n", "zone: expected str, got 3"),
        ("shutdown_grace = 'soon'\n", "shutdown_grace: expected float, got 'soon'"),
        ("image_cache_gib = 0\n", "image_cache_gib: must be positive, got 0.0"),
        ("image_cache_gib = -5\n", "image_cache_gib: must be positive, got -5.0"),
        ("devices = 1\n", "devices: expected true or false, got 1"),
        ("devices = 'yes'\n", "devices: expected true or false, got 'yes'"),
        ('power_driver = "ipmi"\n', "power_driver: 'ipmi' is not 'qemu' or 'fake'"),
        ("power_driver = 1\n", "power_driver: expected str, got 1"),
        ("[[local_disks]]\nsize_gib = 10\n", "local_disks: each entry needs a name"),
        ("[[local_disks]]\nname = 7\nsize_gib = 10\n", "local_disks: each entry needs a name"),
        ("local_disks = [1]\n", "local_disks: each entry needs a name, got 1"),
        ('[[local_disks]]\nname = "nvme0"\nsize_gib = 0\n', "local_disks.nvme0: size_gib"),
        ('[[local_disks]]\nname = "nvme0"\nsize_gib = -1\n', "local_disks.nvme0: size_gib"),
        ('[[local_disks]]\nname = "nvme0"\n', "local_disks.nvme0: size_gib"),
        ('[[local_disks]]\nname = "nvme0"\nsize_gib = "10"\n', "local_disks.nvme0: size_gib"),
        ('storage = "rbd"\n', "storage: expected a [storage] table"),
        ('[storage]\nbackend = "nfs"\n', "storage.backend: 'nfs' is not 'file' or 'rbd'"),
        ('[storage]\nbackend = "rbd"\nceph_conf = "/c"\n', "storage.pool: required"),
        ('[storage]\nbackend = "rbd"\npool = "p"\n', "storage.ceph_conf: required"),
        ("[storage]\npool = 3\n", "storage.pool: expected a string, got 3"),
        ('[storage]\nmonitors = "x"\n', "storage: unknown setting 'monitors'"),
    ],
)
def test_bad_setting_is_a_config_error_naming_it(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, toml)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("endpoints", ["", " ", ",", " , "])
def test_no_endpoint(tmp_path: Path, endpoints: str) -> None:
    with pytest.raises(ConfigError, match="--control-plane: give at least one HOST:PORT"):
        _load(tmp_path, endpoints=endpoints)


@pytest.mark.parametrize("endpoint", ["cp1", "cp1:", ":50051", "cp1:http", "cp1:-1"])
def test_endpoint_not_host_port(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, endpoints=f"cp0:1,{endpoint}")
    assert str(err.value) == f"--control-plane: {endpoint!r} is not HOST:PORT"


@pytest.mark.parametrize("credential", ["", "host-2.secret", "host-1secret", "xhost-1.secret"])
def test_credential_for_another_host(tmp_path: Path, credential: str) -> None:
    with pytest.raises(ConfigError, match="the credential is not for host 'host-1'"):
        _load(tmp_path, credential=credential)


@pytest.mark.parametrize("host_id", ["", "hosts/host-1", "a/b"])
def test_bad_host_id(tmp_path: Path, host_id: str) -> None:
    with pytest.raises(ConfigError, match=r"^--host-id"):
        _load(tmp_path, host_id=host_id, credential=f"{host_id}.secret")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, file=missing)
    assert str(err.value) == f"--config {missing}: No such file or directory"


def test_unreadable_file(tmp_path: Path) -> None:
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    with pytest.raises(ConfigError, match=f"^{re.escape(f'--config {directory}')}: Is a directory"):
        _load(tmp_path, file=directory)


@pytest.mark.parametrize("toml", ["cpus = \n", "[[local_disks]\n", "cpus = 1\ncpus = 2\n", "x"])
def test_garbled_toml(tmp_path: Path, toml: str) -> None:
    with pytest.raises(ConfigError, match=r"^--config "):
        _load(tmp_path, toml)


# -- behaviour the loader does not have yet (these tests fail; see the report) --


def test_bool_for_a_float_setting_is_rejected(tmp_path: Path) -> None:
    """``shutdown_grace = true`` is refused, not widened to 1.0 (``True`` is an
    ``int`` to Python)."""
    with pytest.raises(ConfigError, match=r"^shutdown_grace"):
        _load(tmp_path, "shutdown_grace = true\n")


def test_bool_for_a_local_disk_size_is_rejected(tmp_path: Path) -> None:
    """``size_gib = true`` is refused, not taken for a 1 GiB local disk."""
    with pytest.raises(ConfigError, match=r"^local_disks\.nvme0"):
        _load(tmp_path, '[[local_disks]]\nname = "nvme0"\nsize_gib = true\n')


def test_local_disks_not_a_list_is_a_config_error(tmp_path: Path) -> None:
    """``local_disks = 5`` is a ConfigError, not a TypeError traceback."""
    with pytest.raises(ConfigError, match=r"^local_disks"):
        _load(tmp_path, "local_disks = 5\n")


@pytest.mark.parametrize("key", ["image_dir", "volume_dir", "run_dir", "probe_kernel"])
def test_path_setting_of_the_wrong_type_is_rejected(tmp_path: Path, key: str) -> None:
    """Path settings are type-checked: ``run_dir = 5`` is refused."""
    with pytest.raises(ConfigError, match=f"^{key}"):
        _load(tmp_path, f"{key} = 5\n")


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """A binary config file is a ConfigError, not a UnicodeDecodeError traceback."""
    file = tmp_path / "agent.toml"
    file.write_bytes(b"cpus = 4\n\xff\xfe\x00garbage\n")
    with pytest.raises(ConfigError, match=f"^{re.escape(f'--config {file}')}"):
        _load(tmp_path, file=file)


def test_storage_section(tmp_path: Path) -> None:
    assert not _load(tmp_path).storage.rbd  # files unless told
    cfg = _load(
        tmp_path, '[storage]\nbackend = "rbd"\npool = "bmaas"\nceph_conf = "/etc/ceph/ceph.conf"\n'
    )
    assert cfg.storage.rbd
    assert (cfg.storage.pool, cfg.storage.ceph_conf) == ("bmaas", Path("/etc/ceph/ceph.conf"))
    assert cfg.storage.client_id == "admin"

"""``offload-net --vpc-directory``: read strictly, hostile input refused in one line."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload.network.directory_file import load_directory, parse_directory
from offload.network.errors import InvalidDirectoryFile

GOOD = {
    "vpc": "vpc-a",
    "neighbors": [
        {"ip": "10.20.1.5", "mac": "02:00:00:00:00:05", "subnet": "10.20.1.0/24", "hostname": "a"},
        {"ip": "10.20.2.5", "mac": "02:00:00:00:00:06", "subnet": "10.20.2.0/24"},
    ],
}


def test_reads_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "vpc.json"
    path.write_text(json.dumps(GOOD))
    directory = load_directory(path)
    assert directory.vpc == "vpc-a"
    assert [n.ip for n in directory.neighbors] == [
        IPv4Address("10.20.1.5"),
        IPv4Address("10.20.2.5"),
    ]
    assert directory.neighbors[1].hostname == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vpc": 3}, "vpc must be a string"),
        ({"zone": "x"}, "unknown key 'zone'"),
        ({"neighbors": [{"ip": "10.20.1.5"}]}, "missing 'mac'"),
        ({"neighbors": [{**GOOD["neighbors"][0], "port": 1}]}, "unknown key 'port'"),
        ({"neighbors": [{**GOOD["neighbors"][0], "ip": "10.30.0.1"}]}, "is not in"),
        ({"neighbors": [{**GOOD["neighbors"][0], "mac": "01:00:5e:00:00:01"}]}, "not a unicast"),
        ({"neighbors": [{**GOOD["neighbors"][0], "ip": 5}]}, "must be a string"),
        ({"neighbors": [GOOD["neighbors"][0]] * 2}, "listed twice"),
        ({"neighbors": {}}, "neighbors a list"),
    ],
)
def test_refuses_bad_directories(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidDirectoryFile, match=message) as info:
        parse_directory(json.dumps({**GOOD, **change}).encode())
    assert "\n" not in str(info.value)


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidDirectoryFile, match=r"vpc directory .*nope\.json"):
        load_directory(tmp_path / "nope.json")


@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_a_directory_or_one_error(data: bytes) -> None:
    try:
        parse_directory(data)
    except InvalidDirectoryFile as exc:
        assert "\n" not in str(exc)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["vpc", "neighbors", "x"]), _json, max_size=3))
def test_arbitrary_json_objects_are_a_directory_or_one_error(raw: dict[str, object]) -> None:
    try:
        parse_directory(json.dumps(raw).encode())
    except InvalidDirectoryFile as exc:
        assert "\n" not in str(exc)

"""Records survive the JSON codec; keys and page tokens are what the docs say."""

from __future__ import annotations

import dataclasses

import pytest

from control_plane.domain import (
    Condition,
    ConditionStatus,
    GroupPlacement,
    Host,
    HostState,
    Instance,
    PlacementGroup,
    fake_hardware,
)
from control_plane.domain.errors import InvalidArgument
from control_plane.domain.names import parse_name
from control_plane.store import codec
from control_plane.store.keys import KeySpace, parent_ids, prefix_range_end
from control_plane.store.paging import decode_token as _decode_token
from control_plane.store.paging import encode_token as _encode_token


def test_host_roundtrip_keeps_nested_types_and_takes_etag_from_outside() -> None:
    host = Host(
        id="h1",
        zone="z",
        rack="r",
        host_class="c",
        hardware=fake_hardware(),
        state=HostState.CLEANING,
        conditions=(Condition("X", ConditionStatus.TRUE, "why"),),
    )
    raw = codec.encode(dataclasses.replace(host, etag="99"))
    assert b"etag" not in raw
    back = codec.decode(Host, raw, etag="7")
    assert back == dataclasses.replace(host, etag="7")
    assert isinstance(back.state, HostState) and isinstance(back.hardware.disks, tuple)


def test_decode_ignores_unknown_fields_and_defaults_missing_ones() -> None:
    inst = codec.decode(
        Instance,
        b'{"tenant":"t","id":"i","instance_type":"x","image":"y","from_the_future":1}',
    )
    assert inst.state == "PENDING" and inst.ssh_keys == ()


def test_group_roundtrip() -> None:
    group = PlacementGroup(tenant="t", id="g", placements=(GroupPlacement(instance="a", rack="r"),))
    assert codec.decode(PlacementGroup, codec.encode(group)) == group


def test_key_layout() -> None:
    keys = KeySpace("/bmaas/v1")
    rn = parse_name("tenants/t1/instances/i1")
    assert keys.resource(rn) == b"/bmaas/v1/instances/t1/i1"
    assert keys.name_of_key(b"/bmaas/v1/subnets/t1/v1/s1") == "tenants/t1/vpcs/v1/subnets/s1"
    assert keys.collection_prefix("instances", parent_ids("instances", "tenants/t1")) == (
        b"/bmaas/v1/instances/t1/"
    )
    assert parent_ids("subnets", "tenants/t1/vpcs/v1") == ("t1", "v1")
    with pytest.raises(InvalidArgument):
        parent_ids("instances", "hosts/h1")
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"


def test_page_tokens_are_bound_to_their_scope() -> None:
    token = _encode_token(b"/bmaas/v1/hosts/h9", "scope-a")
    assert _decode_token(token, "scope-a") == b"/bmaas/v1/hosts/h9"
    with pytest.raises(InvalidArgument):
        _decode_token(token, "scope-b")
    with pytest.raises(InvalidArgument):
        _decode_token("%%%", "scope-a")

"""Conditions helper, AIP names, validation and the filter grammar."""

from __future__ import annotations

import pytest

from control_plane.domain import Host, Instance, fake_hardware
from control_plane.domain.agent import AgentPhase, events_for_report
from control_plane.domain.conditions import ConditionStatus, find_condition, set_condition
from control_plane.domain.errors import InvalidArgument
from control_plane.domain.filtering import parse_filter
from control_plane.domain.lifecycle import InstanceEvent, InstanceState
from control_plane.domain.names import make_name, parse_name
from control_plane.domain.validation import (
    validate_id,
    validate_page_size,
    validate_ssh_keys,
    validate_subnet_cidr,
    validate_user_data,
)

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


def test_set_condition_only_moves_time_when_status_flips() -> None:
    c1 = set_condition((), type_="Ready", status=F, reason="Booting", now=1.0)
    c2 = set_condition(c1, type_="Ready", status=F, reason="StillBooting", now=2.0)
    assert find_condition(c2, "Ready").last_transition_time == 1.0  # type: ignore[union-attr]
    assert find_condition(c2, "Ready").reason == "StillBooting"  # type: ignore[union-attr]
    c3 = set_condition(c2, type_="Ready", status=T, now=3.0)
    assert find_condition(c3, "Ready").last_transition_time == 3.0  # type: ignore[union-attr]
    assert set_condition(c3, type_="Ready", status=T, now=4.0) is c3
    c4 = set_condition(c3, type_="Impaired", status=F, now=5.0)
    assert [c.type for c in c4] == ["Ready", "Impaired"]


def test_names_parse_and_render() -> None:
    rn = parse_name("tenants/t1/vpcs/v1/subnets/s1")
    assert (rn.collection, rn.ids, rn.tenant) == ("subnets", ("t1", "v1", "s1"), "t1")
    assert str(rn) == "tenants/t1/vpcs/v1/subnets/s1"
    assert parse_name("hosts/h1").tenant is None
    assert make_name("instances", "t1", "i1") == "tenants/t1/instances/i1"
    for bad in ("", "hosts", "hosts/", "hosts/H1", "tenants/t1/hosts/h1", "nope/x", "a/b/c"):
        with pytest.raises(InvalidArgument):
            parse_name(bad)
    with pytest.raises(InvalidArgument):
        parse_name("hosts/h1", collection="instances")


def test_validation_helpers() -> None:
    assert validate_id("web-1") == "web-1"
    for bad in ("1abc", "-a", "a-", "A", "a_b", "x" * 64):
        with pytest.raises(InvalidArgument):
            validate_id(bad)
    validate_subnet_cidr("10.0.1.0/24", "10.0.0.0/16")
    for sub, vpc in (
        ("10.1.0.0/24", "10.0.0.0/16"),
        ("10.0.0.1/24", "10.0.0.0/16"),
        ("fd00::/64", "10.0.0.0/8"),
        ("nonsense", "10.0.0.0/8"),
    ):
        with pytest.raises(InvalidArgument):
            validate_subnet_cidr(sub, vpc)
    with pytest.raises(InvalidArgument):
        validate_user_data("x" * (16 * 1024 + 1))
    with pytest.raises(InvalidArgument):
        validate_ssh_keys(["not a key"])
    validate_ssh_keys(["ssh-ed25519 AAAA user@host"])
    assert validate_page_size(0) == 100 and validate_page_size(10**6) == 1000


def test_filter_grammar() -> None:
    host = Host(id="h1", zone="z1", rack="r1", host_class="c", hardware=fake_hardware(cpus=32))
    assert parse_filter("").matches(host)
    assert parse_filter("zone=z1 AND hardware.cpus=32").matches(host)
    assert not parse_filter('zone="z2"').matches(host)
    assert parse_filter("state!=AVAILABLE AND cordoned=false").matches(host)
    flt = parse_filter("state=RUNNING AND zone=z9", record_type=Instance)
    assert flt.equals("zone") == "z9" and flt.equals("tenant") is None
    for bad in ("zone", "zone=z1 OR zone=z2", "zone=z1 and state=X", "=x", "zone==x"):
        with pytest.raises(InvalidArgument):
            parse_filter(bad, record_type=Host)
    with pytest.raises(InvalidArgument):
        parse_filter("hardware.nope=1", record_type=Host)


def test_agent_reports_map_to_instance_events() -> None:
    assert events_for_report(InstanceState.SCHEDULED, AgentPhase.RUNNING) == [
        InstanceEvent.PROVISION,
        InstanceEvent.PROVISIONED,
        InstanceEvent.STARTED,
    ]
    assert events_for_report(InstanceState.STARTING, AgentPhase.PROVISIONING) == []
    assert events_for_report(InstanceState.RUNNING, AgentPhase.FAILED) == [InstanceEvent.FAIL]
    assert events_for_report(InstanceState.TERMINATING, AgentPhase.FAILED) == []
    assert events_for_report(InstanceState.STOPPING, AgentPhase.STOPPED) == [InstanceEvent.STOPPED]
    assert events_for_report(InstanceState.REBOOTING, AgentPhase.RUNNING) == [InstanceEvent.STARTED]

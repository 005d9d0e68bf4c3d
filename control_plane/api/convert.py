"""Domain dataclasses -> protobuf messages, and the few spec messages back.

Output conversion is total and lossless for what the API shows: enum states
map by name (``HostState.RUNNING`` -> ``HOST_STATE_RUNNING``), epoch-second
floats become ``google.protobuf.Timestamp`` (0.0 stays unset), and an etag is
the record's etcd ``mod_revision`` as a decimal string.  Input conversion
(``hardware_from_pb``) assumes the message was validated by
``control_plane.api.validate``; it never raises on well-formed input.
Secrets (``agent_credential_hash``) never leave this module in a message.
"""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from bmaas.v1 import agent_pb2, common_pb2
from control_plane.domain import agent as d_agent
from control_plane.domain import compute as d_compute
from control_plane.domain import conditions as d_cond
from control_plane.domain import host as d_host
from control_plane.domain import network as d_net
from control_plane.domain import placement as d_place
from control_plane.domain import tenant as d_tenant
from control_plane.domain import volume as d_volume
from control_plane.domain.lifecycle import HostState, InstanceState
from control_plane.domain.storage import volume_image


def timestamp(epoch: float) -> timestamp_pb2.Timestamp | None:
    if epoch <= 0.0:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def host_state(state: HostState) -> common_pb2.HostState.ValueType:
    return common_pb2.HostState.Value(f"HOST_STATE_{state.value}")


def instance_state(state: InstanceState) -> common_pb2.InstanceState.ValueType:
    return common_pb2.InstanceState.Value(f"INSTANCE_STATE_{state.value}")


def instance_state_from_pb(value: int) -> InstanceState | None:
    name = common_pb2.InstanceState.Name(value).removeprefix("INSTANCE_STATE_")  # type: ignore[arg-type]
    return InstanceState(name) if name in InstanceState.__members__ else None


def condition(c: d_cond.Condition) -> common_pb2.Condition:
    return common_pb2.Condition(
        type=c.type,
        status=str(c.status),
        reason=c.reason,
        message=c.message,
        last_transition_time=timestamp(c.last_transition_time),
    )


def hardware(hw: d_host.HardwareProfile) -> common_pb2.HardwareProfile:
    return common_pb2.HardwareProfile(
        cpus=hw.cpus,
        memory_gib=hw.memory_gib,
        disks=[common_pb2.Disk(name=d.name, size_gib=d.size_gib, kind=d.kind) for d in hw.disks],
        nics=[
            common_pb2.Nic(name=n.name, mac_address=n.mac, speed_gbps=n.speed_gbps) for n in hw.nics
        ],
    )


def hardware_from_pb(msg: common_pb2.HardwareProfile) -> d_host.HardwareProfile:
    return d_host.HardwareProfile(
        cpus=msg.cpus,
        memory_gib=msg.memory_gib,
        disks=tuple(
            d_host.Disk(name=d.name, size_gib=d.size_gib, kind=d.kind or "nvme") for d in msg.disks
        ),
        nics=tuple(
            d_host.Nic(name=n.name, mac=n.mac_address, speed_gbps=n.speed_gbps or 25)
            for n in msg.nics
        ),
    )


def host(h: d_host.Host) -> common_pb2.Host:
    return common_pb2.Host(
        name=h.name,
        hardware=hardware(h.hardware),
        zone=h.zone,
        rack=h.rack,
        host_class=h.host_class,
        power_driver=h.power_driver,
        state=host_state(h.state),
        cordoned=h.cordoned,
        maintenance=h.maintenance,
        maintenance_reason=h.maintenance_reason,
        instance=h.assigned_instance,
        cleaning_epoch=h.cleaning_epoch,
        conditions=[condition(c) for c in h.conditions],
        last_heartbeat_time=timestamp(h.last_heartbeat),
        create_time=timestamp(h.create_time),
        update_time=timestamp(h.update_time),
        etag=h.etag,
    )


def instance_type(t: d_compute.InstanceType) -> common_pb2.InstanceType:
    return common_pb2.InstanceType(
        name=t.name,
        host_class=t.host_class,
        cpus=t.cpus,
        memory_gib=t.memory_gib,
        description=t.description,
        create_time=timestamp(t.create_time),
        etag=t.etag,
    )


def image(i: d_compute.Image) -> common_pb2.Image:
    return common_pb2.Image(
        name=i.name,
        display_name=i.display_name,
        os=i.os,
        source_uri=i.source,
        size_gib=i.size_gib,
        checksum=i.checksum,
        create_time=timestamp(i.create_time),
        etag=i.etag,
    )


def quota(q: d_tenant.Quota) -> common_pb2.Quota:
    return common_pb2.Quota(max_instances=q.max_instances, max_volume_gib=q.max_volume_gib)


def tenant(t: d_tenant.Tenant, usage: d_tenant.QuotaUsage | None = None) -> common_pb2.Tenant:
    msg = common_pb2.Tenant(
        name=t.name,
        display_name=t.display_name,
        quota=quota(t.quota),
        create_time=timestamp(t.create_time),
        etag=t.etag,
    )
    if usage is not None:
        msg.usage.CopyFrom(
            common_pb2.QuotaUsage(instances=usage.instances, volume_gib=usage.volume_gib)
        )
    return msg


def instance(i: d_compute.Instance) -> common_pb2.Instance:
    return common_pb2.Instance(
        name=i.name,
        instance_type=i.instance_type,
        image=i.image,
        subnet=i.subnet,
        volumes=list(i.volumes),
        user_data=i.user_data,
        ssh_keys=list(i.ssh_keys),
        placement_group=i.placement_group,
        zone=i.zone,
        metadata_tokens=metadata_tokens(i.metadata_tokens),
        state=instance_state(i.state),
        target_state=instance_state(i.target_state),
        host=i.host,
        network_interfaces=list(i.network_interfaces),
        conditions=[condition(c) for c in i.conditions],
        failure_reason=i.failure_reason,
        create_time=timestamp(i.create_time),
        update_time=timestamp(i.update_time),
        etag=i.etag,
    )


_METADATA_TOKENS = {
    d_compute.MetadataTokens.REQUIRED: common_pb2.METADATA_TOKENS_REQUIRED,
    d_compute.MetadataTokens.OPTIONAL: common_pb2.METADATA_TOKENS_OPTIONAL,
}


def metadata_tokens(mode: d_compute.MetadataTokens) -> common_pb2.MetadataTokens.ValueType:
    return _METADATA_TOKENS[mode]


def metadata_tokens_from_pb(
    value: common_pb2.MetadataTokens.ValueType,
) -> d_compute.MetadataTokens | None:
    """The mode a request asks for (UNSPECIFIED is REQUIRED); None if unknown."""
    if value == common_pb2.METADATA_TOKENS_UNSPECIFIED:
        return d_compute.MetadataTokens.REQUIRED
    for mode, pb in _METADATA_TOKENS.items():
        if pb == value:
            return mode
    return None


def volume(v: d_volume.Volume) -> common_pb2.Volume:
    state = common_pb2.VOLUME_STATE_IN_USE if v.attached_to else common_pb2.VOLUME_STATE_AVAILABLE
    return common_pb2.Volume(
        name=v.name,
        size_gib=v.size_gib,
        zone=v.zone,
        image=v.image,
        state=state,
        instance=v.attached_to,
        create_time=timestamp(v.create_time),
        update_time=timestamp(v.update_time),
        etag=v.etag,
        conditions=[condition(c) for c in v.conditions],
        max_iops=v.max_iops,
        max_mbps=v.max_mbps,
    )


def vpc(v: d_net.Vpc) -> common_pb2.Vpc:
    return common_pb2.Vpc(
        name=v.name, cidr=v.cidr, vni=v.vni, create_time=timestamp(v.create_time), etag=v.etag
    )


def subnet(s: d_net.Subnet) -> common_pb2.Subnet:
    return common_pb2.Subnet(
        name=s.name, cidr=s.cidr, zone=s.zone, create_time=timestamp(s.create_time), etag=s.etag
    )


def network_interface(n: d_net.NetworkInterface) -> common_pb2.NetworkInterface:
    return common_pb2.NetworkInterface(
        name=n.name,
        subnet=n.subnet,
        private_ip=n.ip_address,
        mac_address=n.mac,
        instance=n.instance,
        delete_on_termination=n.delete_on_termination,
        create_time=timestamp(n.create_time),
        etag=n.etag,
    )


def placement_group(g: d_place.PlacementGroup) -> common_pb2.PlacementGroup:
    return common_pb2.PlacementGroup(
        name=g.name,
        strategy=common_pb2.PLACEMENT_STRATEGY_SPREAD_RACKS,
        create_time=timestamp(g.create_time),
        etag=g.etag,
    )


_PHASES: dict[int, d_agent.AgentPhase] = {
    common_pb2.INSTANCE_STATE_PROVISIONING: d_agent.AgentPhase.PROVISIONING,
    common_pb2.INSTANCE_STATE_STARTING: d_agent.AgentPhase.STARTING,
    common_pb2.INSTANCE_STATE_RUNNING: d_agent.AgentPhase.RUNNING,
    common_pb2.INSTANCE_STATE_STOPPED: d_agent.AgentPhase.STOPPED,
    common_pb2.INSTANCE_STATE_FAILED: d_agent.AgentPhase.FAILED,
}


def agent_phase(value: int) -> d_agent.AgentPhase | None:
    """The observed phase an agent may report; None for states agents cannot observe."""
    return _PHASES.get(value)


def desired_volume(v: d_volume.Volume, *, boot: bool, rbd: bool = False) -> agent_pb2.DesiredVolume:
    return agent_pb2.DesiredVolume(
        volume=v.name,
        size_gib=v.size_gib,
        boot=boot,
        source_image=v.image,
        rbd_image=volume_image(v.tenant, v.id) if rbd else "",
        max_iops=v.max_iops,
        max_mbps=v.max_mbps,
    )

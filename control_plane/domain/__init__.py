"""Pure domain model: dataclasses and explicit lifecycle transition tables.

No I/O and no imports of gRPC or etcd; everything here is testable in
isolation.  Modules, one concern each:

- ``errors``      the exception tree every layer raises (drawn in its docstring)
- ``names``       AIP-122 resource names and their parser
- ``validation``  field validators raising ``InvalidArgument``
- ``filtering``   the list-filter grammar (``state=RUNNING AND zone=z1``)
- ``lifecycle``   host and instance transition tables, groups, ``transition()``
- ``conditions``  status conditions and the one helper that sets them
- ``tenant``, ``host``, ``compute``, ``volume``, ``network``, ``placement``,
  ``agent``       the records (frozen dataclasses; change them with
  ``dataclasses.replace``).  ``etag`` is the store's ``mod_revision`` as a
  string and is never part of the stored value.
"""

from control_plane.domain.agent import AgentPhase, AgentReport
from control_plane.domain.compute import Image, Instance, InstanceType
from control_plane.domain.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    condition_is,
    find_condition,
    set_condition,
)
from control_plane.domain.host import Disk, HardwareProfile, Host, Nic, fake_hardware
from control_plane.domain.lifecycle import (
    HostEvent,
    HostState,
    InstanceEvent,
    InstanceState,
    host_transition,
    instance_transition,
)
from control_plane.domain.network import NetworkInterface, Subnet, Vpc
from control_plane.domain.placement import GroupPlacement, PlacementGroup, PlacementStrategy
from control_plane.domain.tenant import Quota, QuotaUsage, Tenant
from control_plane.domain.volume import Volume

#: Every stored resource type (the store's kind registry is built from this).
RESOURCE_TYPES: tuple[type, ...] = (
    Tenant,
    Host,
    InstanceType,
    Image,
    Instance,
    Volume,
    Vpc,
    Subnet,
    NetworkInterface,
    PlacementGroup,
)

__all__ = [
    "RESOURCE_TYPES",
    "AgentPhase",
    "AgentReport",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Disk",
    "GroupPlacement",
    "HardwareProfile",
    "Host",
    "HostEvent",
    "HostState",
    "Image",
    "Instance",
    "InstanceEvent",
    "InstanceState",
    "InstanceType",
    "NetworkInterface",
    "Nic",
    "PlacementGroup",
    "PlacementStrategy",
    "Quota",
    "QuotaUsage",
    "Subnet",
    "Tenant",
    "Volume",
    "Vpc",
    "condition_is",
    "fake_hardware",
    "find_condition",
    "host_transition",
    "instance_transition",
    "set_condition",
]

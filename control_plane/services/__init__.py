"""The services layer: what the control plane does, between the gRPC edge
(``control_plane.api``) and etcd (``control_plane.store``).

A servicer authenticates, validates and converts a request, then calls one
service method with domain objects; the service reads and writes through
the ``Store`` and returns domain objects (or raises the domain error tree).
Services never see generated protobuf or gRPC (an import-linter contract),
so each workflow can be read -- and tested -- as plain Python:

- ``instances``: the CreateInstance saga (primary interface -> create ->
  attach volumes -> place, undone on refusal) and the power/terminate actions;
- ``attachments``: attach and detach of volumes and network interfaces
  (both records in one transaction, retried over controllers' races);
- ``network``: creates that claim values -- a VPC's VNI, an interface's
  MAC and address -- drawing again when another record holds one;
- ``hosts``: drain (cordon, then terminate the host's instance);
- ``peers``: the VXLAN peers of an instance's VPCs, for its desired state;
- ``races``: re-running a read-check-write that lost to a controller.

``Services`` bundles them for the servicers (built once by the API server).
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.services.attachments import Attachments
from control_plane.services.hosts import Hosts
from control_plane.services.instances import Instances, Placer
from control_plane.services.network import Network
from control_plane.store import Store


@dataclass(frozen=True, slots=True)
class Services:
    instances: Instances
    attachments: Attachments
    network: Network
    hosts: Hosts

    @classmethod
    def build(cls, store: Store, placer: Placer) -> Services:
        network = Network(store)
        return cls(
            instances=Instances(store, placer, network),
            attachments=Attachments(store),
            network=network,
            hosts=Hosts(store),
        )


__all__ = ["Attachments", "Hosts", "Instances", "Network", "Placer", "Services"]

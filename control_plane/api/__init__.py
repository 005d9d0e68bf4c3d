"""gRPC servicers for TenantService, OperatorService and AgentService.

The only place that imports generated ``bmaas.v1`` modules.  Layers, one
concern per module:

- ``server``   assembles a replica's API: store, host cache + scheduler,
               servicers, health and reflection on one ``grpc.aio`` server;
- ``rpc``      the wrapper every unary handler runs in (deadline, metrics,
               error mapping);
- ``errors``   THE table from domain errors to gRPC codes with rich details;
- ``auth``     bearer credentials (tenant tokens, operator token, per-host
               agent credentials), digests compared in constant time;
- ``validate`` field checks before any write, ownership -> NOT_FOUND;
- ``convert``  domain dataclasses <-> protobuf messages;
- ``tenant*``, ``operator``, ``agent`` (+ ``agent_hub``), ``catalog`` the
               servicers.

Tenant-token digests are a store record kind (``store.tenant_tokens``);
nothing here builds etcd keys or transactions (an import-linter contract
keeps ``control_plane.store.kv`` out of this package).
"""

"""gRPC servicers for TenantService, OperatorService and AgentService.

The only place that imports generated ``bmaas.v1`` modules: it converts
protobuf messages to domain dataclasses and back, and maps domain errors
to gRPC status codes through one table.
"""

"""The gRPC connection behind ``bmctl``: TLS, bearer token metadata, a
per-call deadline, failover between control-plane replicas, and error
formatting.

Channels speak TLS (``bmaas_tls``): trusting ``--ca`` (the region's CA) or
the system's roots; plaintext only with ``--insecure``.  An unreadable CA
file is a usage error before any call.

``--endpoint`` takes one ``HOST:PORT`` or several, comma-separated (the
region's replicas).  A call goes to the replica that answered last; when it
is UNAVAILABLE (the replica is down or unreachable), the same call goes to
the next one, until every replica has been tried.  Retrying is safe:
UNAVAILABLE means the call was not served, and creates carry a request id.

``Client.call(service, method, request)`` looks the RPC up on the generated
stub by name, so the command table in ``bmctl.commands`` stays declarative.
A ``grpc.RpcError`` becomes a ``CliError`` whose text is one line,
``<CODE>: <message>`` followed by the rich-status details (field violations,
quota failures) decoded from the trailing metadata that the message does not
already say, and whose exit status follows the code (``bmctl.exitcodes``:
NOT_FOUND 3, DEADLINE_EXCEEDED 4, UNAVAILABLE from every replica 5, else 1).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status

from bmaas.v1 import operator_pb2_grpc, tenant_pb2_grpc
from bmaas_tls import ClientTls, TlsError, channel_credentials, sync_channel
from bmctl import exitcodes


class CliError(Exception):
    """A failure to report to the user and exit non-zero (see ``bmctl.exitcodes``).

    ``code`` is the gRPC status name when the failure is an RPC error."""

    def __init__(self, message: str, exit_code: int = exitcodes.API_ERROR, code: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code


#: gRPC codes with their own exit status; every other code is API_ERROR
_EXIT_BY_CODE = {
    "NOT_FOUND": exitcodes.NOT_FOUND,
    "DEADLINE_EXCEEDED": exitcodes.TIMEOUT,
    "UNAVAILABLE": exitcodes.UNREACHABLE,
}


def rpc_cli_error(err: grpc.RpcError, suffix: str = "") -> CliError:
    """One ``CliError`` for an RPC failure, its exit status chosen by the code."""
    code = err.code().name if isinstance(err, grpc.Call) else "UNKNOWN"
    return CliError(
        describe_rpc_error(err) + suffix,
        _EXIT_BY_CODE.get(code, exitcodes.API_ERROR),
        code,
    )


def describe_rpc_error(err: grpc.RpcError) -> str:
    code = err.code() if isinstance(err, grpc.Call) else None
    details = err.details() if isinstance(err, grpc.Call) else str(err)
    name = code.name if code is not None else "UNKNOWN"
    lines = [f"{name}: {details}"]
    violations: list[str] = []
    status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    if status is not None:
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            quota = error_details_pb2.QuotaFailure()
            if detail.Unpack(bad):
                violations += [
                    f"field {v.field}: {v.description}"
                    for v in bad.field_violations
                    if f"{v.field}: {v.description}" not in details  # said already
                ]
            elif detail.Unpack(quota):
                violations += [f"quota {q.subject}: {q.description}" for q in quota.violations]
    # one line: the details follow the message after "; "
    return "; ".join(lines + violations)


class Client:
    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        timeout: float = 30.0,
        tls: ClientTls | None = None,
    ) -> None:
        self.tls = tls if tls is not None else ClientTls()
        if not self.tls.insecure:
            try:
                channel_credentials(self.tls)  # the CA is readable now, or say so now
            except TlsError as exc:
                raise CliError(f"--ca: {exc}", exitcodes.USAGE) from None
        self.endpoints = [e.strip() for e in endpoint.split(",") if e.strip()]
        if not self.endpoints:
            raise CliError(
                "no endpoint: pass --endpoint HOST:PORT, set BMAAS_ENDPOINT or configure a "
                "context (bmctl config set-context)",
                exitcodes.USAGE,
            )
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._current = 0
        self._channels: dict[int, grpc.Channel] = {}
        self._stubs: dict[int, dict[str, Any]] = {}

    def _stub(self, index: int, service: str) -> Any:
        if index not in self._stubs:
            channel = self._channels[index] = sync_channel(self.endpoints[index], self.tls)
            self._stubs[index] = {
                "tenant": tenant_pb2_grpc.TenantServiceStub(channel),
                "operator": operator_pb2_grpc.OperatorServiceStub(channel),
            }
        return self._stubs[index][service]

    def call(
        self, service: str, method: str, request: Message, *, timeout: float | None = None
    ) -> Message:
        last: grpc.RpcError | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            rpc = getattr(self._stub(index, service), method)
            try:
                response: Message = rpc(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=self._metadata,
                )
            except grpc.RpcError as err:
                if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNAVAILABLE:
                    last = err  # this replica is gone: the next one
                    continue
                raise rpc_cli_error(err) from err
            self._current = index
            return response
        assert last is not None
        tried = ", ".join(self.endpoints)
        raise rpc_cli_error(last, f" (tried {tried})") from last

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

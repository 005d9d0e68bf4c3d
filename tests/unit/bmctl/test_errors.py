"""Failures are one line with a documented exit status: RPC errors by code
(details folded in), argparse errors, bad values, and unexpected bugs."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from bmctl import exitcodes
from bmctl import main as cli
from bmctl.client import describe_rpc_error, rpc_cli_error


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    def __init__(self, status: status_pb2.Status) -> None:
        self._status = rpc_status.to_status(status)

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return str(self._status.details)

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(self._status.trailing_metadata)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> None:
        return None


def test_rpc_errors_name_code_message_and_fields_on_one_line() -> None:
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="volume.size_gib: 0 out of range"
    )
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="volume.size_gib", description="must be >= 1"
            )
        ]
    )
    status.details.add().Pack(bad)
    text = describe_rpc_error(FakeRpcError(status))
    assert text.startswith("INVALID_ARGUMENT: volume.size_gib: 0 out of range")
    assert "; field volume.size_gib: must be >= 1" in text and "\n" not in text
    # a violation the message already says is not repeated
    status.message = "volume.size_gib: must be >= 1"
    assert describe_rpc_error(FakeRpcError(status)) == status.message.join(
        ["INVALID_ARGUMENT: ", ""]
    )


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (code_pb2.NOT_FOUND, exitcodes.NOT_FOUND),
        (code_pb2.DEADLINE_EXCEEDED, exitcodes.TIMEOUT),
        (code_pb2.UNAVAILABLE, exitcodes.UNREACHABLE),
        (code_pb2.FAILED_PRECONDITION, exitcodes.API_ERROR),
        (code_pb2.UNAUTHENTICATED, exitcodes.API_ERROR),
    ],
)
def test_exit_status_by_grpc_code(code: int, exit_code: int) -> None:
    err = rpc_cli_error(FakeRpcError(status_pb2.Status(code=code, message="m")))
    assert err.exit_code == exit_code


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        ([], "required: NOUN"),
        (["host"], "host: the following arguments are required: VERB"),
        (["host", "fly"], "invalid choice: 'fly'"),
        (["-o", "xml", "host", "list"], "invalid choice: 'xml'"),
        (["volume", "create", "--size-gib", "-3"], "out of range"),
        (["volume", "create", "--size-gib", "lots"], "expected a whole number"),
        (["instance", "stop", "i", "--wait", "--timeout", "0"], "positive number of seconds"),
        (["--request-timeout", "x", "host", "list"], "expected seconds"),
        (["host", "list", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    assert cli.main(argv) == exitcodes.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("bmctl: error: ") and problem in line


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code, text in exitcodes.TABLE:
        assert f"{code:<4}{text}" in out


def test_no_endpoint_and_unexpected_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli.main(["host", "list"]) == exitcodes.USAGE
    assert "no endpoint" in capsys.readouterr().err

    def boom(*_: object) -> None:
        raise RuntimeError("bug\nsecond line")

    monkeypatch.setattr(cli, "run", boom)
    assert cli.main(["--endpoint", "h:1", "host", "list"]) == exitcodes.API_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "bmctl: error: internal error: RuntimeError: bug second line"

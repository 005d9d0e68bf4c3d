"""``wait_for`` with a scripted resource: plain lines per state change when
stderr is not a terminal, a live rich status when it is; the timeout and
failure exit statuses."""

from __future__ import annotations

import io

import pytest

from bmaas.v1 import common_pb2
from bmctl import exitcodes
from bmctl.client import CliError
from bmctl.wait import Goal, wait_for

S = common_pb2


def scripted(*states: int, reason: str = "") -> Goal:
    seq = [S.Instance(name="i", state=s, failure_reason=reason) for s in states]

    def get(_deadline: float) -> S.Instance:
        return seq.pop(0) if len(seq) > 1 else seq[0]

    return Goal(
        name="tenants/t/instances/i",
        target="RUNNING",
        get=get,
        done=lambda m: m is not None and m.state == S.INSTANCE_STATE_RUNNING,  # type: ignore[attr-defined]
        state=lambda m: S.InstanceState.Name(m.state).removeprefix("INSTANCE_STATE_"),  # type: ignore[union-attr]
        failed=lambda m: m.failure_reason if m.state == S.INSTANCE_STATE_FAILED else None,  # type: ignore[attr-defined]
    )


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_progress_one_line_per_state() -> None:
    goal = scripted(
        S.INSTANCE_STATE_PROVISIONING, S.INSTANCE_STATE_STARTING, S.INSTANCE_STATE_RUNNING
    )
    out = io.StringIO()
    first = goal.get(1)
    last = wait_for(goal, first, timeout=5, interval=0.01, stream=out)
    assert last is not None and last.state == S.INSTANCE_STATE_RUNNING  # type: ignore[attr-defined]
    lines = out.getvalue().splitlines()
    assert [line.split(": ")[2].split()[0] for line in lines] == [
        "PROVISIONING",
        "STARTING",
        "RUNNING",
    ]
    assert all(line.startswith("bmctl: tenants/t/instances/i: ") for line in lines)


def test_live_progress_on_a_terminal() -> None:
    goal = scripted(S.INSTANCE_STATE_STARTING, S.INSTANCE_STATE_RUNNING)
    out = Tty()
    wait_for(goal, goal.get(1), timeout=5, interval=0.01, stream=out)
    text = out.getvalue()
    assert "RUNNING after" in text and "tenants/t/instances/i" in text


def test_timeout_and_failure_exit_codes() -> None:
    goal = scripted(S.INSTANCE_STATE_PROVISIONING)
    with pytest.raises(CliError) as exc:
        wait_for(goal, goal.get(1), timeout=0.2, interval=0.05, stream=io.StringIO())
    assert exc.value.exit_code == exitcodes.TIMEOUT
    assert "timed out after 0.2s" in str(exc.value) and "PROVISIONING" in str(exc.value)
    goal = scripted(S.INSTANCE_STATE_STARTING, S.INSTANCE_STATE_FAILED, reason="disk wipe failed")
    with pytest.raises(CliError) as exc:
        wait_for(goal, goal.get(1), timeout=5, interval=0.01, stream=io.StringIO())
    assert exc.value.exit_code == exitcodes.FAILED
    assert str(exc.value) == "tenants/t/instances/i is FAILED: disk wipe failed"

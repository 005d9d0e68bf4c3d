"""``--endpoint A,B``: when the replica bmctl used dies, the call goes to the
other one; with every replica gone, one UNAVAILABLE line naming them and the
unreachable exit status."""

from __future__ import annotations

from collections.abc import Callable

from bmctl import exitcodes
from tests.integration.bmctl.conftest import Bmctl, covers


@covers("tenant create", "tenant list")
def test_several_endpoints_move_to_a_live_replica(
    bmctl: Bmctl, control_planes: Callable[[], object]
) -> None:
    first, second = control_planes(), control_planes()
    both = f"127.0.0.1:{first.port},127.0.0.1:{second.port}"  # type: ignore[attr-defined]
    op = bmctl.at(both)
    op("tenant", "create", "--id", "t-a")
    first.kill()  # type: ignore[attr-defined]
    op("tenant", "create", "--id", "t-b")
    assert sorted(t["name"] for t in op.json("tenant", "list")) == ["tenants/t-a", "tenants/t-b"]
    second.kill()  # type: ignore[attr-defined]
    got = op("--request-timeout", "2", "tenant", "list", expect=exitcodes.UNREACHABLE)
    assert "UNAVAILABLE" in got.err and both.replace(",", ", ") in got.err
    assert len(got.err.strip().splitlines()) == 1

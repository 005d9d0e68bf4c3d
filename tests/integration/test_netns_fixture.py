"""The netns fixture creates real namespaces and removes exactly those."""

from __future__ import annotations

from collections.abc import Callable

from pyroute2 import netns as pr_netns

from tools.region.netns import NetNamespace


def test_namespace_exists_with_loopback_up(netns: Callable[[str], NetNamespace]) -> None:
    ns = netns("fixture")
    assert ns.name in pr_netns.listnetns()
    out = ns.run("ip", "-o", "link", "show", "lo").stdout
    assert "UP" in out or "UNKNOWN" in out
    assert ns.run("ping", "-c1", "-W1", "127.0.0.1", check=False).returncode == 0


def test_namespace_is_removed_on_close() -> None:
    ns = NetNamespace("closing").create()
    assert ns.name in pr_netns.listnetns()
    ns.close()
    assert ns.name not in pr_netns.listnetns()

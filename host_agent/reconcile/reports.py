"""Step 4, reports: what goes up the Connect stream, deduplicated.

The reconciler re-observes everything on every run and ``send``s what it
sees; ``Outbox`` passes a report on only when it differs from the last one
of its kind for the same instance (one slot per report type and instance).
``resend()`` (a new stream) forgets every slot, so the next run sends it all
again; ``forget(instance)`` drops an instance's slots when it is torn down.
"""

from __future__ import annotations

from collections.abc import Callable

from host_agent.reports import ConsoleReport, InstanceReport, Report


class Outbox:
    def __init__(self, report: Callable[[Report], None]) -> None:
        self._report = report
        self._sent: dict[str, Report] = {}

    def send(self, report: Report) -> None:
        key = type(report).__name__ + getattr(report, "instance", "")
        if self._sent.get(key) == report:
            return
        self._sent[key] = report
        self._report(report)

    def resend(self) -> None:
        self._sent.clear()

    def forget(self, instance: str) -> None:
        self._sent.pop(InstanceReport.__name__ + instance, None)
        self._sent.pop(ConsoleReport.__name__ + instance, None)

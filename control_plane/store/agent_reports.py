"""Agent reports: the observed state of each host, one key per host
(``agent_reports/{h}``), written by the API's AgentService and read by the
controllers.

``merge`` is how the AgentService writes: one txn that compares the etag of
the report the stream last wrote (or "absent", on a stream's first report)
and puts the changed report; if another writer moved it (a second stream of
the host), the failure branch returns the stored report to merge into - so
a report costs one round trip in the steady state, no read before the
write.  ``put`` (tests, tools) is a plain put: last writer wins."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Callable

from control_plane.domain.agent import AgentReport
from control_plane.domain.errors import Aborted
from control_plane.store import codec
from control_plane.store.keys import KeySpace
from control_plane.store.kv import EtcdKV, cmp_mod, op_get, op_put
from control_plane.store.paging import Pages
from control_plane.store.watching import WatchEvent

#: merges tried before a contended report gives up (Aborted)
MERGE_TRIES = 8


class AgentReports:
    def __init__(
        self, kv: EtcdKV, keys: KeySpace, pages: Pages, clock: Callable[[], float]
    ) -> None:
        self._kv = kv
        self._keys = keys
        self._pages = pages
        self._clock = clock

    async def put(self, report: AgentReport) -> AgentReport:
        if not report.report_time:
            report = dataclasses.replace(report, report_time=self._clock())
        key = self._keys.agent_report(report.host)
        res = await self._kv.txn([], [op_put(key, codec.encode(report))])
        return dataclasses.replace(report, etag=str(res.revision))

    async def merge(
        self,
        host: str,
        change: Callable[[AgentReport], AgentReport],
        *,
        known: AgentReport | None = None,
    ) -> AgentReport:
        """Apply *change* to *host*'s stored report in one txn, starting from
        *known* (the version this writer last wrote; None: assume none is
        stored).  The report as written, with its etag."""
        key = self._keys.agent_report(host)
        base = known
        for _ in range(MERGE_TRIES):
            new = dataclasses.replace(
                change(base or AgentReport(host=host)), report_time=self._clock()
            )
            etag = int(base.etag) if base is not None and base.etag else 0
            res = await self._kv.txn(
                [cmp_mod(key, etag)], [op_put(key, codec.encode(new))], [op_get(key)]
            )
            if res.succeeded:
                return dataclasses.replace(new, etag=str(res.revision))
            got = res.ranges[0]
            base = (
                codec.decode(AgentReport, got[0].value, etag=str(got[0].mod_revision))
                if got
                else None
            )
        raise Aborted(f"the report of hosts/{host} keeps changing under this writer")

    async def get(self, host: str) -> AgentReport | None:
        kv = await self._kv.get(self._keys.agent_report(host))
        if kv is None:
            return None
        return codec.decode(AgentReport, kv.value, etag=str(kv.mod_revision))

    async def delete(self, host: str) -> None:
        await self._kv.delete(self._keys.agent_report(host))

    async def list_all(self) -> tuple[dict[str, AgentReport], int]:
        kvs, rev = await self._pages.snapshot(self._keys.agent_reports_prefix())
        reports = {}
        for kv in kvs:
            rep = codec.decode(AgentReport, kv.value, etag=str(kv.mod_revision))
            reports[rep.host] = rep
        return reports, rev

    async def watch(self, *, start_revision: int) -> AsyncGenerator[WatchEvent[AgentReport], None]:
        prefix = self._keys.agent_reports_prefix()
        async for deleted, kv in self._kv.watch_shared(prefix, start_revision=start_revision):
            host = self._keys.last_segment(kv.key)
            obj = (
                None if deleted else codec.decode(AgentReport, kv.value, etag=str(kv.mod_revision))
            )
            yield WatchEvent(deleted, f"hosts/{host}", obj, kv.mod_revision)

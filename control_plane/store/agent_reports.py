"""Agent reports: the observed state of each host, one key per host
(``agent_reports/{h}``), written by the API's AgentService and read by the
controllers.  Plain puts (last writer wins): a report is a snapshot, and the
agent re-sends it on every change and on reconnect."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Callable

from control_plane.domain.agent import AgentReport
from control_plane.store import codec
from control_plane.store.keys import KeySpace
from control_plane.store.kv import EtcdKV, op_put
from control_plane.store.paging import Pages
from control_plane.store.watching import WatchEvent


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

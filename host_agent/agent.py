"""One host's agent: the reconciler plus the control-plane link.

``Agent`` is also the library that scale tests and the control-plane
benchmark run many times in one process (with the ``fake`` power driver
and no devices): it speaks the real ``AgentService`` protocol, so the
control plane cannot tell it from a real card.  ``aclose()`` stops the
agent and leaves its servers and back-ends running, as a crash or an
upgrade would: the next agent adopts them.  Agents in one process should
share their channels (``channels=SharedChannels()``, see
``host_agent.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from host_agent.client import ControlPlaneLink, SharedChannels
from host_agent.config import AgentConfig
from host_agent.files import private_dir
from host_agent.power.base import PowerDriver
from host_agent.power.fake import FakePower
from host_agent.reconcile import Reconciler


def default_driver_factory(config: AgentConfig) -> Callable[[Path], PowerDriver]:
    if config.power_driver == "fake":
        return FakePower
    from host_agent.power.qemu_driver import QemuPower

    return lambda workdir: QemuPower(workdir, config)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        driver_factory: Callable[[Path], PowerDriver] | None = None,
        channels: SharedChannels | None = None,
    ) -> None:
        self.config = config
        self.reconciler = Reconciler(
            config,
            driver_factory=driver_factory or default_driver_factory(config),
            report=lambda report: self.link.send(report),
        )
        self.link = ControlPlaneLink(
            config,
            on_desired=self.reconciler.set_desired,
            on_connect=self.reconciler.resend,
            applied_generation=lambda: self.reconciler.applied_generation,
            channels=channels,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        private_dir(self.config.state_dir)  # user data, keys and state live under it
        self._tasks = [
            asyncio.create_task(self.reconciler.run(), name=f"reconcile-{self.config.host_id}"),
            asyncio.create_task(self.link.run(), name=f"link-{self.config.host_id}"),
        ]

    async def wait(self) -> None:
        """Run until a task fails (it raises) or the agent is closed."""
        await asyncio.gather(*self._tasks)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.reconciler.aclose()

    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

"""``bmaas-agent``: the offload card's management plane on one host.

    bmaas-agent --control-plane HOST:PORT[,HOST:PORT...] --host-id ID \\
        --credential-file FILE --state-dir DIR [--config FILE] [--metrics HOST:PORT]
        [--ca FILE] [--cert FILE --key FILE] [--insecure]

The link to the control plane is TLS: ``--ca`` is the region's CA (else
the system's roots), ``--cert``/``--key`` the agent's client certificate
naming its host; plaintext only with ``--insecure``.

Errors in the arguments or the config file are one ``bmaas-agent: error:``
line and exit status 2; so is a credential file that group or others can
access (it must be mode 0600 or tighter, like an ssh key).  SIGTERM/SIGINT
stop the agent and leave the servers and their device back-ends running (a
restarted agent adopts them); to tear a host down, terminate its instance
through the control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn

from prometheus_client import REGISTRY

from host_agent import config as config_mod
from host_agent.agent import Agent
from host_agent.files import CredentialFileError, read_credential
from host_agent.metrics import DeviceCollector
from host_agent.storage.errors import StorageError
from host_agent.storage.rbd import CephTarget, RbdPool

log = logging.getLogger("host_agent")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="bmaas-agent", description="The offload card's agent for one host.")
    p.add_argument("--control-plane", required=True, metavar="HOST:PORT[,...]")
    p.add_argument("--host-id", required=True, metavar="ID")
    p.add_argument("--credential-file", required=True, type=Path, metavar="FILE")
    p.add_argument("--state-dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML file (inventory, driver)")
    p.add_argument("--metrics", default="", metavar="HOST:PORT", help="serve Prometheus metrics")
    p.add_argument("--ca", type=Path, metavar="FILE", help="CA bundle of the control plane")
    p.add_argument("--cert", type=Path, metavar="FILE", help="client certificate of this host")
    p.add_argument("--key", type=Path, metavar="FILE", help="key of the client certificate")
    p.add_argument("--insecure", action="store_true", help="plaintext to the control plane")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        credential = read_credential(args.credential_file)
    except CredentialFileError as exc:
        parser.exit(2, f"bmaas-agent: error: --credential-file: {exc}\n")
    try:
        cfg = config_mod.load(
            host_id=args.host_id,
            endpoints=args.control_plane,
            credential=credential,
            state_dir=args.state_dir,
            file=args.config,
            metrics=args.metrics,
            ca=args.ca,
            cert=args.cert,
            cert_key=args.key,
            insecure=args.insecure,
        )
    except config_mod.ConfigError as exc:
        parser.exit(2, f"bmaas-agent: error: {exc}\n")
    if cfg.storage.rbd and cfg.storage.ceph_conf is not None:
        try:  # a missing pool or an unreachable cluster: one line, before anything starts
            RbdPool(
                CephTarget(
                    pool=cfg.storage.pool,
                    conf=cfg.storage.ceph_conf,
                    client_id=cfg.storage.client_id,
                )
            ).close()
        except StorageError as exc:
            parser.exit(2, f"bmaas-agent: error: [storage]: {exc}\n")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if cfg.metrics:
        host, _, port = cfg.metrics.rpartition(":")
        try:
            from prometheus_client import start_http_server

            start_http_server(int(port), addr=host or "127.0.0.1")
        except (OSError, ValueError) as exc:
            parser.exit(2, f"bmaas-agent: error: --metrics {cfg.metrics}: {exc}\n")
    return asyncio.run(_run(cfg))


async def _run(cfg: config_mod.AgentConfig) -> int:
    agent = Agent(cfg)
    REGISTRY.register(DeviceCollector(agent.reconciler.backends))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    log.info(
        "agent for hosts/%s started (driver %s, state %s)",
        cfg.host_id,
        cfg.power_driver,
        cfg.state_dir,
    )
    waiter = asyncio.create_task(agent.wait())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await agent.aclose()
    stopper.cancel()
    if waiter in done and waiter.exception() is not None:
        log.error("agent stopped: %s", waiter.exception())
        return 1
    log.info("agent stopped; servers and back-ends left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())

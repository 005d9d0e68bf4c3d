"""Keeping one replica's ``Authenticator`` true to the tenant-token records.

Two loops, started by ``ApiServer.start`` before the gRPC server accepts a
call and cancelled by ``stop``:

1. ``follow_tokens``: watch ``tenant_tokens/`` from the store's current revision
   and call ``Authenticator.token_changed`` for every token written or
   deleted, so a revocation (or an issue, a last-use write) drops the
   token from this replica's cache as soon as etcd delivers the event --
   well within a second.  If the watch fails (etcd unreachable past the
   client's retries, a compacted revision) the whole cache is dropped
   (``forget``: the next calls read etcd again) and the watch restarts
   from the then-current revision after a short pause.
2. ``flush_uses``: every ``interval`` seconds, write the latest use of each
   token used since the last round (``TenantTokens.touch``).  A token used a
   thousand times a minute costs one etcd write a minute per replica; a
   failed write is logged and dropped (the next use writes it again).
"""

from __future__ import annotations

import asyncio
import logging

from control_plane.api.auth import Authenticator
from control_plane.domain.errors import BmaasError
from control_plane.store import Store

log = logging.getLogger(__name__)

#: default seconds between last-use writes of one token (per replica)
LAST_USE_INTERVAL = 60.0
#: pause before a failed token watch starts again
WATCH_RETRY = 0.5


async def follow_tokens(store: Store, auth: Authenticator, ready: asyncio.Event) -> None:
    """Forward token-record changes to *auth*; sets *ready* once watching."""
    while True:
        try:
            start = await store.tenant_tokens.revision()
            changes = store.tenant_tokens.changes(start_revision=start + 1)
            auth.forget()
            ready.set()
            async for token_id in changes:
                auth.token_changed(token_id)
        except BmaasError as exc:
            log.warning("tenant-token watch failed (%s): cache dropped, watching again", exc)
            auth.forget()
        except Exception:  # a bug must not silently stop revocations from biting
            log.exception("tenant-token watch crashed: cache dropped, watching again")
            auth.forget()
        await asyncio.sleep(WATCH_RETRY)


async def flush_uses(store: Store, auth: Authenticator, interval: float) -> None:
    """Write each used token's last use, at most once per *interval*."""
    while True:
        await asyncio.sleep(interval)
        for token_id, when in auth.take_uses().items():
            try:
                await store.tenant_tokens.touch(token_id, when)
            except BmaasError as exc:
                log.warning("last use of tenant token %s not written: %s", token_id, exc)

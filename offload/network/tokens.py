"""Session tokens of one NIC's metadata service (IMDSv2 style).

A guest asks for a token with ``PUT /latest/api/token`` and a TTL of 1 to
21,600 seconds, then presents it with every GET.  ``SessionTokens`` is the
table behind that, one per NIC (each ``NicServices`` owns one), so a token
issued to one NIC is unknown to every other: that is what binds it to the
NIC.  A token is 32 bytes from ``secrets`` in URL-safe base64 (43
characters, 256 bits: not guessable); the table maps it to its expiry on the
caller's monotonic clock.  Expired tokens are purged on every call, and the
table holds at most ``max_tokens`` (a guest asking for more evicts the one
that expires first), so a guest cannot grow the card's memory with PUTs.

``MetadataTokens`` is the per-NIC policy: ``optional`` serves GETs without a
token (IMDSv1) as well as with a valid one, ``required`` answers a GET
without a valid token with 401.  With either, a token that is presented but
unknown or expired gets 401, as EC2 does.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable

__all__ = ["MAX_TTL", "MIN_TTL", "MetadataTokens", "SessionTokens"]

MIN_TTL = 1
MAX_TTL = 21600


class MetadataTokens(enum.Enum):
    """Whether a NIC's metadata GETs need a session token."""

    OPTIONAL = "optional"
    REQUIRED = "required"


class SessionTokens:
    """The live session tokens of one NIC; not thread-safe (the caller locks)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        max_tokens: int = 256,
        entropy: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens >= 1")
        self._clock = clock
        self._max = max_tokens
        self._entropy = entropy
        self._expiry: dict[str, float] = {}
        self.issued = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._expiry)

    def issue(self, ttl: int) -> str:
        """A new token valid for *ttl* seconds (``MIN_TTL``..``MAX_TTL``)."""
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ValueError(f"ttl {ttl} is outside {MIN_TTL}..{MAX_TTL}")
        now = self._clock()
        self._purge(now)
        if len(self._expiry) >= self._max:
            del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
            self.evicted += 1
        token = self._entropy()
        self._expiry[token] = now + ttl
        self.issued += 1
        return token

    def valid(self, token: str) -> bool:
        """Whether *token* was issued here and has not expired."""
        expiry = self._expiry.get(token)
        if expiry is None:
            return False
        if self._clock() >= expiry:
            del self._expiry[token]
            return False
        return True

    def _purge(self, now: float) -> None:
        for token, expiry in list(self._expiry.items()):
            if now >= expiry:
                del self._expiry[token]

"""What a reconcile pass returns to the work queue.

- ``Done()``: converged (or waiting for an event that will requeue the key);
  the key's backoff is reset.
- ``Transient(delay)``: try again; after *delay* seconds if given (polling,
  e.g. a cleaning step that takes time), else after the key's exponential
  backoff (an error that may go away).
- ``Permanent(reason)``: retrying cannot help; the controller has set a
  condition saying why; the key is dropped until something changes it.

A handler that raises is treated as ``Transient()`` (and logged).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class Transient:
    delay: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Permanent:
    reason: str


Outcome = Done | Transient | Permanent

DONE = Done()

"""The reconciler's errors.

::

    ReconcileError
    └── ProvisionFailed   retrying cannot help: the instance fails with the message

Anything else raised by a step (an image server down, a QMP time-out) is
transient: the run fails, is logged once, and the next run retries.
"""

from __future__ import annotations


class ReconcileError(Exception):
    """Base of the reconciler's own errors."""


class ProvisionFailed(ReconcileError):
    """Provisioning cannot succeed (the message is the instance's failure reason)."""

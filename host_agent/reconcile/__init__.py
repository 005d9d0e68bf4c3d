"""The agent's reconciler, one module per step (``reconciler`` has the list).

``Reconciler`` is the entry point; the steps are ``teardown``,
``cleaning``, ``instance`` (which runs ``provisioning``, ``nics``,
``hotplug`` and ``power``) and ``reports``; ``context`` holds what they
share and ``volumes`` is where disks come from.
"""

from host_agent.reconcile.errors import ProvisionFailed, ReconcileError
from host_agent.reconcile.names import short_id, tap_name
from host_agent.reconcile.reconciler import Reconciler
from host_agent.reports import ConsoleReport, HostReport, InstanceReport, Report

__all__ = [
    "ConsoleReport",
    "HostReport",
    "InstanceReport",
    "ProvisionFailed",
    "ReconcileError",
    "Reconciler",
    "Report",
    "short_id",
    "tap_name",
]

"""The control plane's side of the storage back-end: a Ceph cluster.

The only control-plane package that imports ``rados``/``rbd`` (an
import-linter contract says so).  ``ceph.CephAdmin`` does what must
happen whatever happens to hosts -- create, grow and delete volume images,
delete boot disks of instances that are gone, fence a card out of its
disks before another host opens them -- each call blocking and idempotent
(the controllers run them in a thread).  Fencing is
``offload.storage.fence``'s, not a copy.

Errors, one tree::

    CephError               the cluster refused (the message says what)
    ├── CephUnavailable     no answer within the timeout (monitors down)
    └── PoolMissing         the configured pool does not exist
"""

from control_plane.storage.ceph import CephAdmin
from control_plane.storage.errors import CephError, CephUnavailable, PoolMissing

__all__ = ["CephAdmin", "CephError", "CephUnavailable", "PoolMissing"]

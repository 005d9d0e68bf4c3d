"""Errors of the card's network plane, under the data plane's ``OffloadError``::

    OffloadError
    └── NetworkError
        ├── InvalidNicConfig      a NIC's service config cannot be served
        │                         (bad MAC, address outside its subnet, ...)
        │   └── InvalidMetadataFile   --metadata FILE.json: unreadable, not an
        │                             object, an unknown key, a wrong type
        │   └── InvalidDirectoryFile  --vpc-directory FILE.json: the same, for
        │                             the VPC directory the card routes with
        ├── FabricConfigError     the desired VPC ports contradict each other
        │                         (one TAP in two VPCs, one VNI for two VPCs)
        └── FabricError           a netlink request failed (wraps NetlinkError)

Guest traffic never raises: the NIC services turn malformed frames into a
verdict and a counter.  Only the agent's calls (building a ``NicServices``,
``Fabric.reconcile``) raise these.
"""

from __future__ import annotations

from offload.errors import OffloadError

__all__ = [
    "FabricConfigError",
    "FabricError",
    "InvalidDirectoryFile",
    "InvalidMetadataFile",
    "InvalidNicConfig",
    "NetworkError",
]


class NetworkError(OffloadError):
    """Base of every error of the card's network plane."""


class InvalidNicConfig(NetworkError, ValueError):
    """The NIC's config cannot be served as given."""


class InvalidMetadataFile(InvalidNicConfig):
    """The instance metadata file cannot be served as it is."""


class FabricConfigError(NetworkError, ValueError):
    """The desired VPC ports contradict each other."""


class FabricError(NetworkError):
    """A netlink request to build or tear down the fabric failed."""


class InvalidDirectoryFile(InvalidNicConfig):
    """The VPC directory file cannot be routed with as it is."""

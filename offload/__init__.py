"""The offload card's data plane.

Serves virtio devices to the server over vhost-user: virtio-blk backed by
cloud volumes and virtio-net wired into a VPC overlay.  It knows nothing
about the control plane.
"""

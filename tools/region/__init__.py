"""Start the components of a local region: real etcd, Ceph, control planes, agents.

What the demo (``tools.demo``), the benchmarks (``bench/``) and the tests
run is launched from here, one module per concern:

- ``process``: spawning a long-lived child (attached, or detached so that it
  outlives the launcher and is stopped later from its recorded pid),
  stopping it, and finding what still runs from a directory;
- ``ports``: free loopback ports;
- ``etcd`` / ``pki``: etcd servers and clusters on loopback, a throwaway CA
  for etcd over TLS;
- ``ceph``: a single-node Ceph (one monitor, one bluestore OSD on a file)
  with a pool for RBD, and librados/librbd helpers to make and inspect
  images without the CLIs;
- ``control_plane``: ``bmaas-control-plane`` as a process or in the
  caller's event loop, and gRPC clients for it;
- ``agents``: ``bmaas-agent`` as a process or as ``Agent`` objects;
- ``world``: the operator's first steps (a tenant, hosts enrolled, an
  instance type, an image) through the API;
- ``region``: one control plane with an enrolled host and a tenant, and a
  real agent (qemu power driver) for it;
- ``guest``: the guest image from ``make guest-image`` and boot disks that
  run a script;
- ``netns``: network namespaces for emulated hosts;
- ``blk_backends``: vhost-user-blk daemons (``offload-blk``,
  ``qemu-storage-daemon``), on a file or an RBD image;
- ``chaos``: a tenant workload that survives faults and the check of etcd's
  history for the invariants;
- ``wait``: polling an async condition.

Each launcher owns the process, namespace or file it created and removes it
when it is stopped; nothing here touches what it did not create.  Nothing
here imports ``tests`` (an import contract in ``pyproject.toml``).
"""

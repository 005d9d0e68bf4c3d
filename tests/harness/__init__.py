"""Test-only helpers: store fixtures, the etcd-dump oracle, a restartable
``offload-blk`` that can be crashed with requests in flight.

What starts real components (etcd, control planes, agents, guests,
namespaces) is the product's ``tools.region``; the tests use it from there.
"""

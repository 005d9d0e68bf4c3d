"""Level-triggered reconcilers: a keyed work queue with per-key backoff and a
global rate limit, periodic resync, and leader election on an etcd lease.
"""

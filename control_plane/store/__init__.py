"""etcd access through aetcd: typed records, compare-and-swap on
``mod_revision``, multi-key transactions and watches.  The only package
that imports aetcd.
"""

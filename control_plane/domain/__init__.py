"""Pure domain model: dataclasses and explicit lifecycle transition tables.

No I/O and no imports of gRPC or etcd; everything here is testable in
isolation.
"""

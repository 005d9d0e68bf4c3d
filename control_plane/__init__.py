"""The regional control plane: the only etcd client.

Tenants, operators and host agents reach it over gRPC (``api``).  Requests
become domain objects (``domain``), placement is decided by the whole-host
``scheduler``, state lives in etcd behind ``store``, and level-triggered
``controllers`` converge instances and hosts towards their desired state.
"""

"""Whole-host placement: a pure filter/score core plus a store adapter that
allocates the chosen host with an etcd compare-and-swap transaction.
"""

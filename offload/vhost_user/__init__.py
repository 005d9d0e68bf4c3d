"""The vhost-user back-end: a sans-I/O ``protocol`` and a ``server`` that owns
the unix socket and the eventfds.
"""

"""Launchers for the real components that tests, benchmarks and the demo use.

Each launcher owns a process, namespace or file it created and removes it in
``aclose()``/``close()``; nothing here touches what it did not create.
"""

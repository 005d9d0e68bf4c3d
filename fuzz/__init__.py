"""Coverage-guided fuzzing (atheris/libFuzzer) of every guest-facing parser of the card.

How it works
------------
1. ``python -m fuzz run TARGET [libFuzzer flags] [corpus dirs]`` imports
   ``fuzz.targets.TARGET`` inside ``atheris.instrument_imports`` limited to
   the ``offload`` package, so libFuzzer's coverage is the card's code and
   nothing else (``fuzz.harness``).  Nothing in ``fuzz`` that is imported
   before that point may import ``offload``.
2. A target module has ``make()``, which builds the long-lived fixtures once
   per process (guest memory, a volume, a socket standing in for the TAP) and
   returns the per-input function, and ``seeds()``, the meaningful inputs
   ``python -m fuzz seeds`` writes to ``fuzz/corpus/<target>/``.
3. The per-input function drives the parser through its public entry point
   (the virtqueue, a device's ``process_queue``, the sans-I/O vhost-user
   back-end, the NIC's ``classify_tx``) and raises on anything the card must
   never do: an exception other than the guest-error classes the entry point
   documents, a service's internal error, a reply that is not well formed,
   or an access outside the guest's memory regions (``fuzz.guest``).  Any
   such exception is a crash for libFuzzer; ``-timeout`` makes a hang one.
4. ``tests/fuzz`` replays each corpus and runs each target for a bounded
   number of executions under ``make test``; ``make fuzz`` runs a long
   campaign and merges what found new coverage into the corpus
   (``fuzz.campaign``).  docs/testing.md has the workflow.
"""

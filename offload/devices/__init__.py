"""virtio devices served by the card: each parses a request, executes it and
completes it, and never lets a malformed request stop its queue.
"""

"""``bmctl``: the command-line client for operators and tenants."""

"""Developer tooling: code generation and the demo driver (not shipped)."""

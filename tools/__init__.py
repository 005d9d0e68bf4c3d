"""Developer tooling: code generation, the disk-image builder, the launchers of a
local region (``tools.region``) and the demo driver (not shipped)."""

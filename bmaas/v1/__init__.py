"""Generated from protos/bmaas/v1 by `make protos`. Do not edit."""

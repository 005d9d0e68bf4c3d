"""virtio feature bits, the split virtqueue and bounded descriptor-chain walks."""

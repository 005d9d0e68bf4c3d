"""Volume engines behind virtio-blk (sparse files first) and QoS token buckets."""

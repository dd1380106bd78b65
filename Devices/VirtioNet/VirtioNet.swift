// virtio-net device

// Virtio: being written.

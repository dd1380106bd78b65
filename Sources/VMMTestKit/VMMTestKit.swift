// VMMTestKit: being written.

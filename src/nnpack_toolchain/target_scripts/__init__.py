"""Scripts run by the target's Python (natively, or under QEMU): they import only mxnet and numpy."""

"""Training: the loop, its state, checkpoints, run directories and logging."""

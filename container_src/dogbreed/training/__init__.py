"""Training: the job recipe (`run`), the epoch loop, data loading, checkpoints for spot
restarts, the callback hooks, and DDP across the GPUs of a host.
`python -m dogbreed.train` starts it."""

//! Synthetic checkpoints: random weights in exactly the published layout, for tests and benchmarks.

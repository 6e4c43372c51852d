//! The CPU backend: the reference forward pass.

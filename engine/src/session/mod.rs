//! A conversation with the model: its KV cache, its tokens, sampling and stop rules, and the streaming loop.

pub mod sampler;

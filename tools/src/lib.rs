//! Text around the engine: tokenization, streaming detokenization, prompts. Knows nothing of the model.

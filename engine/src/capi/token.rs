//! Token ids as the ABI passes them, and the id that stands for none.

/// A token id.
pub type EngineToken = u32;

/// "No token": the token id passed to the generate callback with text that belongs to no single token (the held
/// back end of the stream), and `engine_generate_result.last_token` when nothing was generated.
// Spelled as a number rather than `u32::MAX`, which cbindgen writes as UINT32_MAX: cffi (the Python package) reads
// only numbers in a #define.
pub const ENGINE_NO_TOKEN: EngineToken = 0xFFFF_FFFF;

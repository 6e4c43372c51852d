// The int4 weight tile layout's numbers, in one place for both languages: the kernels include this file, and the
// engine-ptx crate's build script turns each `#define INT4_NAME VALUE` below into `pub const NAME` in Rust
// (`engine_ptx::tile`), which the memory plan and the repacking code use. Change a number here and both sides
// follow; only plain integer defines belong in this file. The layout itself: engine/src/backend/cuda/layout.rs.
#pragma once

// Output slots per tile: a warp's 16-byte loads cover 16 slots × 2 half-warps.
#define INT4_TILE_N 16
// Input rows per warp step: two 32-row chunks, one per half-warp.
#define INT4_STEP_K 64
// Input rows one lane reads per step: 4 words of 8 nibbles.
#define INT4_CHUNK_K 32
// The column-map entry of a padding slot (a slot that computes no output column).
#define INT4_PAD_SLOT 0xFFFFFFFFu

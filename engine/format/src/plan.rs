//! The static device memory plan: every buffer the CUDA backend will ever use, with offset, size and alignment,
//! computed from the model description and the run limits before anything is allocated.

use alloc::string::String;
use alloc::vec::Vec;

/// Limits the plan is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Positions of KV cache per sequence.
    pub max_context: usize,
    /// Most tokens processed by one prefill chunk.
    pub prefill_chunk: usize,
}

/// Which allocation a buffer lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Weights,
    KvCache,
    Activations,
    Workspace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanBuffer {
    pub name: String,
    pub region: Region,
    /// Byte offset inside its region.
    pub offset: usize,
    pub size: usize,
    pub align: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub limits: PlanLimits,
    pub buffers: Vec<PlanBuffer>,
}

//! The memory plan resolved against the device allocations: a typed device address per plan buffer, made once
//! when the backend (or a KV cache) is created. The launch code reads fields; a buffer the plan lacks is a
//! compile error, not a failed lookup.

use engine_format::plan::{ActivationBuffers, KvLayout, WorkspaceBuffers};
use half::f16;

use super::driver::{DevPtr, DeviceBuffer};
use super::kernels::SamplerConfig;

/// The activation region (see [`ActivationBuffers`]).
pub(crate) struct Activations {
    pub x: DevPtr<f32>,
    pub xn: DevPtr<f16>,
    pub qkv: DevPtr<f16>,
    pub q: DevPtr<f16>,
    pub att: DevPtr<f16>,
    pub att_perm: DevPtr<f16>,
    pub xn2: DevPtr<f16>,
    pub gate_up: DevPtr<f16>,
    pub h: DevPtr<f16>,
    pub gemm_in: DevPtr<f16>,
}

impl Activations {
    pub fn resolve(mem: &DeviceBuffer, a: &ActivationBuffers) -> Activations {
        Activations {
            x: mem.at(a.x),
            xn: mem.at(a.xn),
            qkv: mem.at(a.qkv),
            q: mem.at(a.q),
            att: mem.at(a.att),
            att_perm: mem.at(a.att_perm),
            xn2: mem.at(a.xn2),
            gate_up: mem.at(a.gate_up),
            h: mem.at(a.h),
            gemm_in: mem.at(a.gemm_in),
        }
    }
}

/// The workspace region (see [`WorkspaceBuffers`]).
pub(crate) struct Workspace {
    pub gemm_partial: DevPtr<f32>,
    pub gemm_counters: DevPtr<u32>,
    pub ssq: DevPtr<f32>,
    pub x_sorted: DevPtr<f32>,
    pub x_half: DevPtr<f16>,
    pub attn_partial_o: DevPtr<f32>,
    pub attn_partial_ml: DevPtr<f32>,
    pub attn_counters: DevPtr<u32>,
    pub logits: DevPtr<f32>,
    pub screen_hi: DevPtr<f32>,
    pub screen_max: DevPtr<u32>,
    pub argmax_val: DevPtr<f32>,
    pub argmax_idx: DevPtr<u32>,
    pub argmax_counter: DevPtr<u32>,
    pub tokens: DevPtr<u32>,
    pub pos: DevPtr<u32>,
    pub sampler: DevPtr<SamplerConfig>,
    pub seen: DevPtr<u32>,
    pub score_targets: DevPtr<u32>,
    pub score_target_logit: DevPtr<f32>,
    pub score_part: DevPtr<f32>,
    pub score_nll: DevPtr<f32>,
}

impl Workspace {
    pub fn resolve(mem: &DeviceBuffer, w: &WorkspaceBuffers) -> Workspace {
        Workspace {
            gemm_partial: mem.at(w.gemm_partial),
            gemm_counters: mem.at(w.gemm_counters),
            ssq: mem.at(w.ssq),
            x_sorted: mem.at(w.x_sorted),
            x_half: mem.at(w.x_half),
            attn_partial_o: mem.at(w.attn_partial_o),
            attn_partial_ml: mem.at(w.attn_partial_ml),
            attn_counters: mem.at(w.attn_counters),
            logits: mem.at(w.logits),
            screen_hi: mem.at(w.screen_hi),
            screen_max: mem.at(w.screen_max),
            argmax_val: mem.at(w.argmax_val),
            argmax_idx: mem.at(w.argmax_idx),
            argmax_counter: mem.at(w.argmax_counter),
            tokens: mem.at(w.tokens),
            pos: mem.at(w.pos),
            sampler: mem.at(w.sampler).cast(),
            seen: mem.at(w.seen),
            score_targets: mem.at(w.score_targets),
            score_target_logit: mem.at(w.score_target_logit),
            score_part: mem.at(w.score_part),
            score_nll: mem.at(w.score_nll),
        }
    }
}

/// One sequence's KV cache on the device: the allocation and each layer's keys and values in it.
pub(crate) struct KvCacheMem {
    /// Owned here: `keys` and `values` point into it.
    _mem: DeviceBuffer,
    pub layout: KvLayout,
    pub keys: Vec<DevPtr<f16>>,
    pub values: Vec<DevPtr<f16>>,
}

impl KvCacheMem {
    /// `mem` must hold `layout.bytes()` (panics otherwise: a bug).
    pub fn new(mem: DeviceBuffer, layout: KvLayout) -> KvCacheMem {
        let keys = (0..layout.layers).map(|l| mem.at(layout.layer_keys(l))).collect();
        let values = (0..layout.layers).map(|l| mem.at(layout.layer_values(l))).collect();
        KvCacheMem { _mem: mem, layout, keys, values }
    }
    /// Positions the cache holds.
    pub fn positions(&self) -> usize {
        self.layout.positions
    }
}

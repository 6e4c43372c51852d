//! What the CUDA backend runs, checked on the validated model before any device is touched, so that every refusal
//! is one clear sentence — what the checkpoint is, what CUDA runs, and `--backend cpu`, which runs everything the
//! loader accepts — on any machine, with or without a GPU. `--backend auto` falls back to the CPU on these.

use engine_format::ModelDesc;

use crate::error::{Error, Result};
use crate::model::Model;

/// Refuse what the kernels cannot run: GPTQ of other widths than 4 and 8 bits, and shapes the kernels do not cover.
/// (Unquantized fp16 and bf16 checkpoints run; bf16 tensors are rounded to fp16 at load.)
pub(crate) fn check(model: &Model) -> Result<()> {
    check_format(&model.desc)?;
    check_shape(&model.desc)
}

/// The prefill chunk: the 128-row GEMM tiles address a chunk's rows of A with 32-bit element offsets (row × row
/// stride, the widest input row padded by a K step), which keeps their registers for the accumulators.
pub(crate) fn check_chunk(desc: &ModelDesc, prefill_chunk: usize) -> Result<()> {
    let c = &desc.config;
    let widest = c.hidden_size.max(c.intermediate_size).max(c.num_attention_heads * c.head_dim) + 64;
    let max_rows = (u32::MAX as usize) / widest;
    if prefill_chunk > max_rows {
        return Err(Error::InvalidArgument(format!(
            "prefill chunk of {prefill_chunk} rows: the CUDA backend takes at most {max_rows} rows per chunk for this \
             model (rows of {widest} halves are addressed with 32-bit offsets); choose a smaller chunk"
        )));
    }
    Ok(())
}

fn unavailable(what: String) -> Error {
    Error::BackendUnavailable(format!("{what}; run this checkpoint with --backend cpu"))
}

/// The quantization: the kernels read 4- and 8-bit GPTQ tiles and fp16 ones.
fn check_format(d: &ModelDesc) -> Result<()> {
    match &d.quant {
        Some(q) if q.bits != 4 && q.bits != 8 => Err(unavailable(format!(
            "{}-bit GPTQ checkpoint (quantization `bits`: {}): the CUDA backend runs 4- and 8-bit GPTQ and unquantized \
             checkpoints",
            q.bits, q.bits
        ))),
        _ => Ok(()),
    }
}

/// The shape: the attention kernels' head sizes and the packing of the GEMVs.
fn check_shape(d: &ModelDesc) -> Result<()> {
    let c = &d.config;
    let hd = c.head_dim;
    if !(hd.is_power_of_two() && (8..=256).contains(&hd)) {
        return Err(Error::BackendUnavailable(format!(
            "head_dim {hd}: the CUDA attention kernels need a power of two in 8..=256; use --backend cpu"
        )));
    }
    if c.hidden_size % 8 != 0 || c.intermediate_size % 8 != 0 {
        return Err(Error::BackendUnavailable(
            "hidden_size and intermediate_size must be multiples of 8 on the CUDA backend; use --backend cpu".into(),
        ));
    }
    Ok(())
}

//! What the CUDA backend runs, checked on the validated model before any device is touched, so that every refusal
//! is one clear sentence — what the checkpoint is, what CUDA runs, and `--backend cpu`, which runs everything the
//! loader accepts — on any machine, with or without a GPU. `--backend auto` falls back to the CPU on these.

use engine_format::{DType, ModelDesc};

use crate::error::{Error, Result};
use crate::model::Model;

/// Refuse what the kernels cannot run: anything but 4- and 8-bit GPTQ, and shapes the kernels do not cover.
pub(crate) fn check(model: &Model) -> Result<()> {
    check_format(&model.desc)?;
    check_shape(&model.desc)
}

fn unavailable(what: String) -> Error {
    Error::BackendUnavailable(format!("{what}; run this checkpoint with --backend cpu"))
}

/// The quantization and the float type: the kernels read 4- and 8-bit GPTQ tiles and fp16 tensors.
fn check_format(d: &ModelDesc) -> Result<()> {
    let Some(q) = &d.quant else {
        return Err(unavailable(format!(
            "unquantized {} checkpoint (no quantize_config.json): the CUDA backend runs 4- and 8-bit GPTQ \
             checkpoints only",
            d.embed_tokens.dtype.name()
        )));
    };
    if q.bits != 4 && q.bits != 8 {
        return Err(unavailable(format!(
            "{}-bit GPTQ checkpoint (quantization `bits`: {}): the CUDA backend runs 4- and 8-bit GPTQ",
            q.bits, q.bits
        )));
    }
    if let Some(t) = d.tensors().into_iter().find(|t| t.dtype == DType::BF16) {
        return Err(unavailable(format!(
            "`{}` is BF16 (config.json: torch_dtype \"bfloat16\"): the CUDA backend reads float16 tensors only",
            t.name
        )));
    }
    Ok(())
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

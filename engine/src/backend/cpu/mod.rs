//! The CPU backend: the reference forward pass of Baichuan-7B / LLaMA, read top to bottom in [`CpuBackend::forward`].
//!
//! f32 activations and accumulation; GPTQ weights (4 or 8 bits) are dequantized on the fly inside the matmul (there
//! is never a dequantized copy of a matrix in memory); the KV cache is f32. Work is spread over the rayon thread
//! pool. This is the oracle the CUDA backend is checked against, so it favours clarity over speed wherever the two
//! disagree.

mod ops;

use std::any::Any;
use std::sync::Arc;

use engine_format::{ModelConfig, TensorRef};

use crate::backend::{check_forward_args, Backend, KvCache, LogitsOut};
use crate::error::{Error, Result};
use crate::model::Model;

use crate::backend::rope::RopeTable;

/// The reference backend.
pub struct CpuBackend {
    model: Arc<Model>,
    rope: RopeTable,
}

/// Keys and values of every layer for one sequence: `[layer][position][kv_dim]`, f32.
pub struct CpuKvCache {
    capacity: usize,
    kv_dim: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache for CpuKvCache {
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl CpuKvCache {
    fn layer_offset(&self, layer: usize, pos: usize) -> usize {
        (layer * self.capacity + pos) * self.kv_dim
    }
}

impl CpuBackend {
    pub fn new(model: Arc<Model>) -> Self {
        let c = &model.desc.config;
        let rope = RopeTable::new(c.head_dim, c.rope_theta as f64, c.max_position_embeddings);
        CpuBackend { model, rope }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn config(&self) -> &ModelConfig {
        &self.model.desc.config
    }

    fn device_description(&self) -> String {
        format!("CPU, {} threads", rayon::current_num_threads())
    }

    fn new_cache(&mut self, max_context: usize) -> Result<Box<dyn KvCache>> {
        let c = self.config();
        if max_context == 0 || max_context > c.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "max context must be in 1..={} (max_position_embeddings), got {max_context}",
                c.max_position_embeddings
            )));
        }
        let n = c.num_hidden_layers * max_context * c.kv_dim();
        // vec! of zeros is calloc: pages are only committed when a position is written.
        Ok(Box::new(CpuKvCache { capacity: max_context, kv_dim: c.kv_dim(), k: vec![0.0; n], v: vec![0.0; n] }))
    }

    fn forward(&mut self, cache: &mut dyn KvCache, start: usize, tokens: &[u32], out: LogitsOut<'_>) -> Result<()> {
        let cache = cache
            .as_any_mut()
            .downcast_mut::<CpuKvCache>()
            .ok_or_else(|| Error::InvalidArgument("KV cache was made by another backend".into()))?;
        check_forward_args(self.config(), cache.capacity, start, tokens, &out)?;
        forward(&self.model, &self.rope, cache, start, tokens, out);
        Ok(())
    }
}

/// One forward pass over `tokens` at positions `start..`, reading and extending `cache`.
fn forward(model: &Model, rope: &RopeTable, cache: &mut CpuKvCache, start: usize, tokens: &[u32], out: LogitsOut<'_>) {
    let d = &model.desc;
    let c = &d.config;
    let (t_len, dim, hd) = (tokens.len(), c.hidden_size, c.head_dim);
    let (q_dim, kv_dim) = (c.num_attention_heads * hd, c.kv_dim());

    // Token embedding: the residual stream x, [t_len, dim].
    let embed = model.floats(&d.embed_tokens);
    let mut x = vec![0f32; t_len * dim];
    for (row, &tok) in x.chunks_exact_mut(dim).zip(tokens) {
        embed.to_f32(tok as usize * dim, row);
    }

    let mut xb = vec![0f32; t_len * dim];
    let mut att = vec![0f32; t_len * q_dim];
    for (l, layer) in d.layers.iter().enumerate() {
        // Attention block: x += o_proj(attention(rope(W_pack(rmsnorm(x)))))
        ops::rmsnorm(&mut xb, &x, &norm_weights(model, &layer.input_layernorm), c.rms_norm_eps);
        let qkv = ops::project(model, &layer.qkv, &xb, t_len);
        let qkv_dim = q_dim + 2 * kv_dim;
        let mut q = vec![0f32; t_len * q_dim];
        for t in 0..t_len {
            let row = &qkv[t * qkv_dim..][..qkv_dim];
            let pos = start + t;
            q[t * q_dim..][..q_dim].copy_from_slice(&row[..q_dim]);
            rope.apply(&mut q[t * q_dim..][..q_dim], pos);
            let at = cache.layer_offset(l, pos);
            cache.k[at..at + kv_dim].copy_from_slice(&row[q_dim..q_dim + kv_dim]);
            rope.apply(&mut cache.k[at..at + kv_dim], pos);
            cache.v[at..at + kv_dim].copy_from_slice(&row[q_dim + kv_dim..]);
        }
        let layer_k = &cache.k[cache.layer_offset(l, 0)..cache.layer_offset(l + 1, 0)];
        let layer_v = &cache.v[cache.layer_offset(l, 0)..cache.layer_offset(l + 1, 0)];
        ops::attention(&mut att, &q, layer_k, layer_v, c, start, t_len);
        let o = ops::matmul(model, &layer.o_proj, &att, t_len);
        x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);

        // Feed-forward block: x += down(silu(gate(h)) * up(h)), h = rmsnorm(x)
        ops::rmsnorm(&mut xb, &x, &norm_weights(model, &layer.post_attention_layernorm), c.rms_norm_eps);
        let mut gate = ops::matmul(model, &layer.gate_proj, &xb, t_len);
        let up = ops::matmul(model, &layer.up_proj, &xb, t_len);
        gate.iter_mut().zip(&up).for_each(|(g, u)| *g = ops::silu(*g) * u);
        let down = ops::matmul(model, &layer.down_proj, &gate, t_len);
        x.iter_mut().zip(&down).for_each(|(x, o)| *x += o);
    }

    // Final norm and the language-model head, only for the rows asked for.
    let (rows, dst) = match out {
        LogitsOut::None => return,
        LogitsOut::Last(l) => (t_len - 1..t_len, l),
        LogitsOut::All(l) => (0..t_len, l),
    };
    let n_rows = rows.len();
    let mut xf = vec![0f32; n_rows * dim];
    ops::rmsnorm(&mut xf, &x[rows.start * dim..rows.end * dim], &norm_weights(model, &d.norm), c.rms_norm_eps);
    ops::lm_head(dst, &xf, model.floats(&d.lm_head), c.vocab_size, dim);
}

/// A norm's weights widened to f32 (a few thousand values, once per use).
fn norm_weights(model: &Model, t: &TensorRef) -> Vec<f32> {
    let w = model.floats(t);
    w.to_f32_vec(0, w.len())
}

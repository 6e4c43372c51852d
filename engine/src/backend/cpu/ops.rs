//! The operations of the reference forward pass, each on plain f32 slices.

use engine_format::gptq::{self, Bits};
use engine_format::{Linear, ModelConfig, Projection};
use half::f16;
use rayon::prelude::*;

use crate::model::{Floats, Model};

/// Output columns one task computes: small enough to spread over threads, wide enough to vectorize.
const COLS_PER_TASK: usize = 16;

/// `out[t] = x[t] / rms(x[t]) * weight` for each row `t` of width `weight.len()`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let dim = weight.len();
    for (o, x) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, x), w) in o.iter_mut().zip(x).zip(weight) {
            *o = x * inv * w;
        }
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `x [t_len, K] · projection → [t_len, N]`, the parts' outputs side by side.
pub fn project(model: &Model, p: &Projection, x: &[f32], t_len: usize) -> Vec<f32> {
    if p.parts.len() == 1 {
        return matmul(model, &p.parts[0], x, t_len);
    }
    let n_total = p.out_features();
    let mut out = vec![0f32; t_len * n_total];
    let mut col = 0;
    for part in &p.parts {
        let n = part.out_features();
        let y = matmul(model, part, x, t_len);
        for t in 0..t_len {
            out[t * n_total + col..][..n].copy_from_slice(&y[t * n..][..n]);
        }
        col += n;
    }
    out
}

/// `x [t_len, K] · W → [t_len, N]` for one linear layer, in f32, dequantizing GPTQ weights on the fly.
pub fn matmul(model: &Model, linear: &Linear, x: &[f32], t_len: usize) -> Vec<f32> {
    let (k_dim, n_dim) = (linear.in_features(), linear.out_features());
    debug_assert_eq!(x.len(), t_len * k_dim);
    // Each task owns COLS_PER_TASK output columns for every row, stored column-block-major so that tasks write
    // disjoint contiguous memory; the block is transposed into [t_len, N] afterwards.
    let mut blocks = vec![0f32; n_dim * t_len];
    let task_len = COLS_PER_TASK * t_len;
    match linear {
        Linear::Gptq { bits, qweight, qzeros, scales, g_idx, .. } => {
            let (qw, qz, sc) = (model.u32(qweight), model.u32(qzeros), model.f16(scales));
            let g_idx = model.u32(g_idx);
            let w = GptqWeights { bits: *bits, qweight: qw, qzeros: qz, scales: sc, g_idx };
            blocks.par_chunks_mut(task_len).enumerate().for_each(|(task, block)| {
                let n0 = task * COLS_PER_TASK;
                let cols = block.len() / t_len;
                gptq_block(block, x, t_len, k_dim, n_dim, n0, cols, &w);
            });
        }
        Linear::Dense { weight, .. } => {
            let w = model.floats(weight);
            blocks.par_chunks_mut(task_len).enumerate().for_each(|(task, block)| {
                let n0 = task * COLS_PER_TASK;
                let mut row = vec![0f32; k_dim];
                for (c, out) in block.chunks_exact_mut(t_len).enumerate() {
                    w.to_f32((n0 + c) * k_dim, &mut row);
                    for (t, o) in out.iter_mut().enumerate() {
                        *o = dot(&row, &x[t * k_dim..][..k_dim]);
                    }
                }
            });
        }
    }
    transpose_blocks(&blocks, t_len, n_dim)
}

/// One GPTQ linear's tensors as the checkpoint stores them (see [`gptq`] for the layout).
struct GptqWeights<'a> {
    bits: Bits,
    qweight: &'a [u32],
    qzeros: &'a [u32],
    scales: &'a [f16],
    g_idx: &'a [u32],
}

/// One block of output columns `n0..n0+cols` of an AutoGPTQ matmul (4 or 8 bits), written `[column][t]`.
///
/// `P = 32 / bits` input rows share one packed word per column (8 at 4 bits, 4 at 8 bits), so the block walks K
/// P rows at a time: it dequantizes `P × cols` weights once (`scale · (q − zero)` with the group of each row from
/// `g_idx`) and applies them to every row of `x`.
#[allow(clippy::too_many_arguments)]
fn gptq_block(
    block: &mut [f32],
    x: &[f32],
    t_len: usize,
    k_dim: usize,
    n_dim: usize,
    n0: usize,
    cols: usize,
    wt: &GptqWeights<'_>,
) {
    let (bits, p) = (wt.bits, wt.bits.per_word());
    let mut acc = vec![[0f32; COLS_PER_TASK]; t_len];

    // Room for the widest word (8 rows at 4 bits); only the first `p` rows are used. Every loop over columns runs
    // over all COLS_PER_TASK of them, so that it vectorizes; columns past `cols` (the ragged last block) have scale
    // 0 and are never written back.
    let mut w = [[0f32; COLS_PER_TASK]; gptq::PACK];
    // The scale and zero point of the current group for each column: rows of one group are usually contiguous,
    // so these are looked up once per group, not once per weight.
    let (mut cur_g, mut scale, mut zero) = (usize::MAX, [0f32; COLS_PER_TASK], [0f32; COLS_PER_TASK]);
    let mut words = [0u32; COLS_PER_TASK];
    for r in 0..k_dim / p {
        // Whole blocks by a fixed-size read (a copy of a run-time length is a call to memcpy per word row, a quarter
        // of the time measured).
        let row = &wt.qweight[r * n_dim + n0..];
        if cols == COLS_PER_TASK {
            let row: &[u32; COLS_PER_TASK] = row[..COLS_PER_TASK].try_into().expect("a whole block");
            words = *row;
        } else {
            for (w, &v) in words.iter_mut().zip(&row[..cols]) {
                *w = v;
            }
        }
        for (j, wj) in w.iter_mut().enumerate().take(p) {
            let g = wt.g_idx[r * p + j] as usize;
            if g != cur_g {
                cur_g = g;
                for c in 0..cols {
                    scale[c] = wt.scales[g * n_dim + n0 + c].to_f32();
                    zero[c] = bits.zero_at(wt.qzeros, n_dim, g, n0 + c) as f32;
                }
            }
            for c in 0..COLS_PER_TASK {
                // Through i32 (a stored value is at most 255): a signed conversion vectorizes, an unsigned one not.
                wj[c] = scale[c] * (bits.field(words[c], j) as i32 as f32 - zero[c]);
            }
        }
        for (t, a) in acc.iter_mut().enumerate() {
            let xr = &x[t * k_dim + r * p..][..p];
            // On a local copy: kept in vector registers (on the array in place, the compiler kept sixteen scalar
            // accumulators and spilled one, measured 3x slower).
            let mut sum = *a;
            for (xj, wj) in xr.iter().zip(&w) {
                for (s, w) in sum.iter_mut().zip(wj) {
                    *s += xj * w;
                }
            }
            *a = sum;
        }
    }
    for c in 0..cols {
        for (t, a) in acc.iter().enumerate() {
            block[c * t_len + t] = a[c];
        }
    }
}

/// Column-block-major `[N/COLS][COLS][t]` (last block possibly narrower) → row-major `[t][N]`.
fn transpose_blocks(blocks: &[f32], t_len: usize, n_dim: usize) -> Vec<f32> {
    let mut out = vec![0f32; t_len * n_dim];
    for n in 0..n_dim {
        let (task, c) = (n / COLS_PER_TASK, n % COLS_PER_TASK);
        let base = task * COLS_PER_TASK * t_len;
        for t in 0..t_len {
            out[t * n_dim + n] = blocks[base + c * t_len + t];
        }
    }
    out
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums let the compiler vectorize without reassociating a single chain.
    let mut s = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            s[i] += x[i] * y[i];
        }
    }
    let mut total: f32 = s.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        total += x * y;
    }
    total
}

/// Causal multi-head attention with grouped KV heads, for rows at positions `start..start + t_len`.
///
/// `q` is `[t_len, heads * head_dim]` (already rotated); `k`, `v` are one layer of the cache, `[position, kv_dim]`,
/// filled up to `start + t_len`. Query head `h` reads KV head `h / (heads / kv_heads)`.
pub fn attention(out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], c: &ModelConfig, start: usize, t_len: usize) {
    let (hd, heads, kv_dim) = (c.head_dim, c.num_attention_heads, c.kv_dim());
    let group = heads / c.num_key_value_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    debug_assert_eq!(out.len(), t_len * heads * hd);
    // One task per (row, head): each writes its own head_dim-wide slice of `out`.
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / heads, i % heads);
        let kvh = h / group;
        let qh = &q[t * heads * hd + h * hd..][..hd];
        let n_pos = start + t + 1;
        let mut scores: Vec<f32> = (0..n_pos).map(|p| dot(qh, &k[p * kv_dim + kvh * hd..][..hd]) * scale).collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (p, s) in scores.iter().enumerate() {
            let w = s / sum;
            for (o, v) in o.iter_mut().zip(&v[p * kv_dim + kvh * hd..][..hd]) {
                *o += w * v;
            }
        }
    });
}

/// `logits[r] = x[r] · lm_head^T` for each row, with `lm_head` F16 or BF16 `[vocab, dim]`.
pub fn lm_head(logits: &mut [f32], x: &[f32], w: Floats<'_>, vocab: usize, dim: usize) {
    let rows = x.len() / dim;
    // Parallel over vocabulary blocks; each block converts its weight rows once and serves every input row.
    let mut blocks = vec![0f32; vocab * rows];
    blocks.par_chunks_mut(COLS_PER_TASK * rows).enumerate().for_each(|(task, block)| {
        let mut row = vec![0f32; dim];
        for (c, out) in block.chunks_exact_mut(rows).enumerate() {
            let n = task * COLS_PER_TASK + c;
            w.to_f32(n * dim, &mut row);
            for (r, o) in out.iter_mut().enumerate() {
                *o = dot(&row, &x[r * dim..][..dim]);
            }
        }
    });
    logits.copy_from_slice(&transpose_blocks(&blocks, rows, vocab));
}

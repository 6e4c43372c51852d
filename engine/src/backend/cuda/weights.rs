//! The weights on the device: every tensor at its memory-plan offset, GPTQ linears repacked into the tile layout.
//!
//! Linear layers are fused where the kernels want them fused: q/k/v into one projection whose tiles pair the
//! rotary halves (LLaMA's three tensors become one, as Baichuan's `W_pack` already is), gate and up into one
//! whose tiles pair gate column i with up column i.

use std::io::Write;

use engine_format::plan::{self, MemoryPlan, Region};
use engine_format::{Linear, TensorRef};

use super::driver::{DeviceMem, Gpu};
use super::layout::{self, ColumnOrder, DeviceLinear};
use super::staging::Staging;
use crate::backend::rope::RopeTable;
use crate::error::{Error, Result};
use crate::model::Model;

/// A repacked linear layer on the device: addresses and the shape numbers its kernels take.
#[derive(Debug, Clone, Copy)]
pub struct DevLinear {
    pub qw: u64,
    pub sz: u64,
    /// 0 without act-order.
    pub perm: u64,
    pub col_map: u64,
    pub k: u32,
    pub k_pad: u32,
    pub n_pad: u32,
    pub groups: u32,
    pub group_size: u32,
    pub chunk_shift: u32,
}

impl DevLinear {
    pub fn tiles(&self) -> u32 {
        self.n_pad / layout::TILE_N as u32
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LayerWeights {
    pub input_norm: u64,
    pub post_norm: u64,
    pub qkv: DevLinear,
    pub o: DevLinear,
    pub gate_up: DevLinear,
    pub down: DevLinear,
}

pub struct DeviceWeights {
    pub mem: DeviceMem,
    pub embed: u64,
    pub layers: Vec<LayerWeights>,
    pub norm: u64,
    pub lm_head: u64,
    pub rope_cos: u64,
    pub rope_sin: u64,
}

struct Uploader<'a> {
    staging: Staging<'a>,
    plan: &'a MemoryPlan,
    base: u64,
    done: usize,
    total: usize,
    progress: bool,
    /// The repack buffer of the previous linear, reused (see [`layout::repack_in`]).
    spare: Vec<u32>,
}

impl Uploader<'_> {
    /// Copy `bytes` to the plan buffer `name`, whose size must be exactly `bytes.len()`.
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<u64> {
        let b = self
            .plan
            .get(name)
            .filter(|b| b.region == Region::Weights)
            .ok_or_else(|| Error::Device(format!("memory plan has no weight buffer {name}")))?;
        if b.size != bytes.len() {
            return Err(Error::Device(format!(
                "memory plan says {name} is {} bytes, the repacked tensor is {} (plan and layout disagree)",
                b.size,
                bytes.len()
            )));
        }
        let dst = self.base + b.offset as u64;
        self.staging.put(dst, bytes)?;
        self.done += bytes.len();
        if self.progress {
            let mut e = std::io::stderr().lock();
            let _ = write!(
                e,
                "\rloading weights to the GPU: {:5.1}% ({:.2} / {:.2} GB)",
                100.0 * self.done as f64 / self.total.max(1) as f64,
                self.done as f64 / 1e9,
                self.total as f64 / 1e9
            );
            let _ = e.flush();
        }
        Ok(dst)
    }

    fn tensor(&mut self, name: &str, model: &Model, t: &TensorRef) -> Result<u64> {
        self.put(name, model.bytes(t))
    }

    /// Repack a GPTQ linear (its parts fused in `order`) and queue it for the device under the plan names
    /// `{prefix}.qw`, `.sz`, `.col_map`, `.perm`.
    fn linear(&mut self, model: &Model, parts: &[&Linear], order: ColumnOrder, prefix: &str) -> Result<DevLinear> {
        let d = layout::repack_in(model, parts, order, prefix, std::mem::take(&mut self.spare))?;
        let dev = self.upload_linear(prefix, &d)?;
        // The words are in pinned memory now: their buffer serves the next linear.
        self.spare = d.qw;
        Ok(dev)
    }

    fn upload_linear(&mut self, prefix: &str, d: &DeviceLinear) -> Result<DevLinear> {
        let qw = self.put(&format!("{prefix}.qw"), bytemuck::cast_slice(&d.qw))?;
        let sz = self.put(&format!("{prefix}.sz"), bytemuck::cast_slice(&d.sz))?;
        let col_map = self.put(&format!("{prefix}.col_map"), bytemuck::cast_slice(&d.col_map))?;
        let perm = match &d.perm {
            Some(p) => self.put(&format!("{prefix}.perm"), bytemuck::cast_slice(p))?,
            None => 0,
        };
        Ok(DevLinear {
            qw,
            sz,
            perm,
            col_map,
            k: d.k as u32,
            k_pad: d.k_pad as u32,
            n_pad: d.n_pad as u32,
            groups: d.groups as u32,
            group_size: d.group_size as u32,
            chunk_shift: d.chunk_shift,
        })
    }
}

impl DeviceWeights {
    pub fn upload(gpu: &Gpu, model: &Model, plan: &MemoryPlan, progress: bool) -> Result<DeviceWeights> {
        let d = &model.desc;
        let c = &d.config;
        let total = plan.region_size(Region::Weights);
        let mem = gpu.alloc(total, "the weights")?;
        let mut up =
            Uploader { staging: Staging::new(gpu)?, plan, base: mem.ptr, done: 0, total, progress, spare: Vec::new() };

        let embed = up.tensor("embed_tokens", model, &d.embed_tokens)?;
        let q_dim = c.num_attention_heads * c.head_dim;
        let mut layers = Vec::with_capacity(d.layers.len());
        for (l, layer) in d.layers.iter().enumerate() {
            let input_norm = up.tensor(&format!("layers.{l}.input_layernorm"), model, &layer.input_layernorm)?;
            let parts: Vec<&Linear> = layer.qkv.parts.iter().collect();
            let order = ColumnOrder::QkvRope { head_dim: c.head_dim, q_dim, kv_dim: c.kv_dim() };
            let qkv = up.linear(model, &parts, order, &format!("layers.{l}.qkv"))?;
            debug_assert_eq!(qkv.n_pad as usize, plan::slots_qkv(c));
            let o = up.linear(model, &[&layer.o_proj], ColumnOrder::Identity, &format!("layers.{l}.o_proj"))?;
            let post_norm =
                up.tensor(&format!("layers.{l}.post_attention_layernorm"), model, &layer.post_attention_layernorm)?;
            let order = ColumnOrder::GateUp { inter: c.intermediate_size };
            let gate_up =
                up.linear(model, &[&layer.gate_proj, &layer.up_proj], order, &format!("layers.{l}.gate_up"))?;
            let down =
                up.linear(model, &[&layer.down_proj], ColumnOrder::Identity, &format!("layers.{l}.down_proj"))?;
            layers.push(LayerWeights { input_norm, post_norm, qkv, o, gate_up, down });
        }
        let norm = up.tensor("norm", model, &d.norm)?;
        let lm_head = if d.lm_head == d.embed_tokens { embed } else { up.tensor("lm_head", model, &d.lm_head)? };
        let rope = RopeTable::new(c.head_dim, c.rope_theta as f64, c.max_position_embeddings);
        let (cos, sin) = rope.tables();
        let rope_cos = up.put("rope.cos", bytemuck::cast_slice(cos))?;
        let rope_sin = up.put("rope.sin", bytemuck::cast_slice(sin))?;
        up.staging.finish()?;
        if progress {
            eprintln!();
        }
        Ok(DeviceWeights { mem, embed, layers, norm, lm_head, rope_cos, rope_sin })
    }
}

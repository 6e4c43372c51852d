//! The weights on the device: every tensor in its memory-plan buffer, GPTQ linears repacked into the tile layout.
//!
//! Linear layers are fused where the kernels want them fused: q/k/v into one projection whose tiles pair the
//! rotary halves (LLaMA's three tensors become one, as Baichuan's `W_pack` already is), gate and up into one
//! whose tiles pair gate column i with up column i.

use std::io::Write;

use engine_format::gptq::Bits;
use engine_format::plan::{
    Buf, HeadScreenBuffers, LinearBuffers, MemoryPlan, Region, TileBuffers, LM_HEAD_SCREEN_GROUP,
};
use engine_format::{Linear, TensorRef};
use half::f16;

use super::driver::{DevPtr, DeviceBuffer, Launch};
use super::kernels::{Device, HeadScreenPackParams, RepackParams};
use super::layout::{self, ColumnOrder, DeviceLinear, TileFormat, STEP_K, TILE_N};
use super::shapes::{self, GemvStream};
use super::staging::Staging;
use super::tuning::Tuning;
use crate::backend::rope::RopeTable;
use crate::error::{Error, Result};
use crate::model::{Floats, Model};

/// A repacked linear layer on the device: its buffers and the shape numbers its kernels take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DevLinear {
    /// What a weight is in the tiles: picks the kernels ([`super::kernels::ByFormat`]) and sizes the tiles.
    pub format: TileFormat,
    pub qw: DevPtr<[u32; 4]>,
    pub sz: DevPtr<u32>,
    /// A symmetric int4 linear's scales-only copy of `sz` ([`TileBuffers::scales`]), where the decode GEMVs read it
    /// instead of `sz` (`Tuning::gemv_sym`, not on the weight ring); null otherwise.
    pub scales: DevPtr<f16>,
    /// Null without act-order; `[parts][k_pad]` with it.
    pub perm: DevPtr<u32>,
    /// The inverse permutations (null without act-order): where the producer of this linear's input puts each
    /// column.
    pub inv: DevPtr<u32>,
    /// With act-order and more than one fused part: the first slot of parts 1 and 2 ([`layout::NO_PART`] where
    /// there is none).
    pub part_slots: [u32; 2],
    pub col_map: DevPtr<u32>,
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
    /// 16-byte words of `qw` per tile: K steps × 32 lanes × 1 (int4), 2 (int8) or 4 (fp16).
    pub fn words_per_tile(&self) -> usize {
        (self.k_pad as usize / layout::STEP_K) * 32 * self.format.lane_words()
    }
    /// 16-byte words of `qw`: every tile's.
    pub fn words(&self) -> u64 {
        self.tiles() as u64 * self.words_per_tile() as u64
    }
    /// Fused parts with a row order of their own: the inputs a kernel stages (1 without act-order).
    pub fn parts(&self) -> u32 {
        layout::part_count(self.part_slots)
    }
    /// The slot range `[start, end)` of each part.
    pub fn part_ranges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let starts = [0, self.part_slots[0], self.part_slots[1]];
        let n = self.parts() as usize;
        (0..n).map(move |i| (starts[i], if i + 1 < n { starts[i + 1] } else { self.n_pad }))
    }
    /// Bytes a decode GEMV streams from memory for this linear: its repacked weights and tables (the permutations
    /// are the producers' business: each reads its inverse, one word per output column): 4 bytes per group and slot
    /// from `sz`, or 2 from the scales-only copy.
    pub fn bytes(&self) -> u64 {
        let (k_pad, n_pad, groups) = (self.k_pad as u64, self.n_pad as u64, self.groups as u64);
        let per_group = if self.scales.is_null() { 4 } else { 2 };
        k_pad * n_pad * self.format.bits() as u64 / 8 + n_pad * groups * per_group + n_pad * 4
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerWeights {
    pub input_norm: DevPtr<f16>,
    pub post_norm: DevPtr<f16>,
    pub qkv: DevLinear,
    pub o: DevLinear,
    pub gate_up: DevLinear,
    pub down: DevLinear,
}

/// The int8 copy of the head (`HeadScreenBuffers` of the plan), filled on the device by `lm_head_screen_pack`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadScreen {
    pub q: DevPtr<u32>,
    pub scales: DevPtr<f16>,
    /// What the screen streams a step ([`HeadScreenBuffers::bytes`]), kept for the step's byte counts.
    pub bytes: u64,
}

pub(crate) struct DeviceWeights {
    pub mem: DeviceBuffer,
    pub embed: DevPtr<f16>,
    pub layers: Vec<LayerWeights>,
    pub norm: DevPtr<f16>,
    pub lm_head: DevPtr<f16>,
    /// The head in int8 for the greedy decode's screen, where the plan has it (`Tuning::lm_head_screen`).
    pub lm_head_screen: Option<HeadScreen>,
    pub rope_cos: DevPtr<f32>,
    pub rope_sin: DevPtr<f32>,
}

struct Uploader<'a> {
    gpu: &'a Device,
    staging: Staging<'a>,
    mem: &'a DeviceBuffer,
    /// With `Tuning::gpu_repack`: room on the device for the largest linear's checkpoint tensors, which
    /// [`Uploader::linear_on_device`] repacks there.
    raw: Option<DeviceBuffer>,
    done: usize,
    total: usize,
    progress: bool,
    /// The repack buffer of the previous linear, reused (see [`layout::repack_in`]).
    spare: Vec<u32>,
    /// Whether the decode GEMVs read the symmetric linears' scales-only copies: only then are they filled.
    scales_only: bool,
}

impl Uploader<'_> {
    /// Queue `data` for its plan buffer `at`, which must hold exactly `data.len()` elements.
    fn put<T: bytemuck::Pod>(&mut self, at: engine_format::plan::Buf<T>, data: &[T]) -> Result<DevPtr<T>> {
        if at.len != data.len() {
            return Err(Error::Device(format!(
                "the memory plan has {} elements for a tensor of {} (plan and layout disagree)",
                at.len,
                data.len()
            )));
        }
        let ptr = self.staging.put(self.mem, at, data)?;
        self.done += at.bytes();
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
        Ok(ptr)
    }

    /// Where a symmetric linear's scales-only copy goes: its plan buffer, where the decode reads it. None where
    /// there is no copy to make (a plan buffer the decode does not read stays unfilled, counted as done for the
    /// progress).
    fn scales_at(&mut self, at: &TileBuffers) -> Option<Buf<f16>> {
        let buf = at.scales?;
        if !self.scales_only {
            self.done += buf.bytes();
            return None;
        }
        Some(buf)
    }

    /// An fp16 tensor as it is; a bf16 one rounded to fp16 (the kernels' type), refused if a value overflows.
    fn tensor(&mut self, at: engine_format::plan::Buf<f16>, model: &Model, t: &TensorRef) -> Result<DevPtr<f16>> {
        match model.floats(t) {
            Floats::F16(v) => self.put(at, v),
            w @ Floats::Bf16(v) => match layout::fp16_tensor(w) {
                Ok(bits) => self.put(at, bytemuck::cast_slice::<u16, f16>(&bits)),
                Err(i) => Err(Error::BackendUnavailable(format!(
                    "`{}` holds {} at element {i}, outside float16's range (the CUDA backend computes in float16); \
                     run this checkpoint with --backend cpu",
                    t.name, v[i]
                ))),
            },
        }
    }

    /// Repack a linear (its parts fused in `order`: GPTQ or unquantized) and queue it for its plan buffers `at`.
    fn linear(
        &mut self,
        model: &Model,
        parts: &[&Linear],
        order: ColumnOrder,
        at: &LinearBuffers,
        what: &str,
    ) -> Result<DevLinear> {
        if let Some(dev) = self.linear_on_device(model, parts, order, at, what)? {
            return Ok(dev);
        }
        let d = layout::repack_linear_in(model, parts, order, what, std::mem::take(&mut self.spare))?;
        let at = match (at, d.format) {
            (LinearBuffers::Int4(at), TileFormat::Int4)
            | (LinearBuffers::Int8(at), TileFormat::Int8)
            | (LinearBuffers::F16(at), TileFormat::F16) => at,
            // The plan describes the same checkpoint.
            _ => return Err(Error::Device(format!("{what}: the memory plan and the repacked layout disagree"))),
        };
        let dev = self.upload_linear(at, &d)?;
        // The words are in pinned memory now: their buffer serves the next linear.
        self.spare = d.qw;
        Ok(dev)
    }

    /// [`Uploader::linear`] through the device: a GPTQ int4 linear without act-order is uploaded as the checkpoint
    /// stores it and reordered into its tiles by `repack.cu` (the same words as the host repack, tested word for
    /// word). `None` without `Tuning::gpu_repack` and for every other linear (the host repack takes it, with its
    /// errors).
    fn linear_on_device(
        &mut self,
        model: &Model,
        parts: &[&Linear],
        order: ColumnOrder,
        at: &LinearBuffers,
        what: &str,
    ) -> Result<Option<DevLinear>> {
        let (LinearBuffers::Int4(at), Some(raw)) = (at, self.raw.as_ref()) else { return Ok(None) };
        let Some(src) = device_repack_sources(parts) else { return Ok(None) };
        let (k, group_size, groups) = (src[0].k, src[0].group_size, src[0].groups);
        let grouping = layout::grouping(k, group_size, groups, what)?;
        let n_total: usize = src.iter().map(|s| s.n).sum();
        let col_map = layout::column_map(order, n_total);
        let (n_pad, k_pad) = (col_map.len(), k.next_multiple_of(STEP_K));
        if at.perm.is_some() {
            return Ok(None); // the plan keeps a row order for it: the host repack writes it
        }
        if at.qw.len * 32 != n_pad * k_pad || at.sz.len != n_pad * groups {
            return Err(Error::Device(format!("{what}: the memory plan and the repacked layout disagree")));
        }
        // The checkpoint's tensors into `raw` (byte offsets, each 16-byte aligned), then the two gathers.
        let mut off = 0usize;
        let mut place = |bytes: usize| {
            let at = off;
            off = (off + bytes).next_multiple_of(16);
            (at, off)
        };
        let mut ptrs = [(DevPtr::NULL, DevPtr::NULL, DevPtr::NULL); 3];
        let mut widths = [0u32; 3];
        for (i, s) in src.iter().enumerate() {
            let (qw, qz, sc) = (model.u32(s.qweight), model.u32(s.qzeros), model.f16(s.scales));
            let ((a, _), (b, _), (c, end)) = (place(qw.len() * 4), place(qz.len() * 4), place(sc.len() * 2));
            if end > raw.len() {
                return Err(Error::Device(format!("{what}: larger than the device repack's room")));
            }
            ptrs[i] = (
                self.staging.put(raw, Buf::new(a, qw.len()), qw)?,
                self.staging.put(raw, Buf::new(b, qz.len()), qz)?,
                self.staging.put(raw, Buf::new(c, sc.len()), sc)?,
            );
            widths[i] = s.n as u32;
        }
        let col_map_ptr = self.put(at.col_map, &col_map)?;
        // The repack's scales kernel writes the scales-only copy beside sz.
        let scales_at = self.scales_at(at);
        let scales = scales_at.map_or(DevPtr::NULL, |b| self.mem.at(b));
        self.staging.flush()?;
        let p = RepackParams {
            qweight0: ptrs[0].0,
            qweight1: ptrs[1].0,
            qweight2: ptrs[2].0,
            qzeros0: ptrs[0].1,
            qzeros1: ptrs[1].1,
            qzeros2: ptrs[2].1,
            scales0: ptrs[0].2,
            scales1: ptrs[1].2,
            scales2: ptrs[2].2,
            col_map: col_map_ptr,
            qw: self.mem.at(at.qw).cast(),
            sz: self.mem.at(at.sz),
            scales,
            n0: widths[0],
            n1: widths[1],
            n2: widths[2],
            k: k as u32,
            steps: (k_pad / STEP_K) as u32,
            tiles: (n_pad / TILE_N) as u32,
            groups: groups as u32,
        };
        let launch = Launch::new(4 * self.gpu.limits.sm_count, 256, 0).after_previous();
        // SAFETY: the sources lie in `raw` (checked above against its size) and were queued on this stream before
        // the launches (flush); qw, sz, scales (null or the plan's copy, as long as sz) and col_map are this
        // linear's plan buffers in `mem`, sized for n_pad × k_pad (checked above); both allocations outlive the
        // upload, which ends with a synchronize.
        unsafe {
            self.gpu.launch(&self.gpu.k.repack_int4_words, launch, &p)?;
            self.gpu.launch(&self.gpu.k.repack_int4_scales, launch, &p)?;
        }
        self.done += at.qw.bytes() + at.sz.bytes() + scales_at.map_or(0, |b| b.bytes());
        Ok(Some(DevLinear {
            format: TileFormat::Int4,
            qw: self.mem.at(at.qw),
            sz: self.mem.at(at.sz),
            scales,
            perm: DevPtr::NULL,
            inv: DevPtr::NULL,
            part_slots: [layout::NO_PART; 2],
            col_map: col_map_ptr,
            k: k as u32,
            k_pad: k_pad as u32,
            n_pad: n_pad as u32,
            groups: groups as u32,
            group_size: grouping.group_size as u32,
            chunk_shift: grouping.chunk_shift,
        }))
    }

    /// The head's int8 copy into `at`, made on the device from the head at `lm_head` (`vocab` × `hidden`, already
    /// queued for upload: the flush puts the kernel behind it).
    fn head_screen(
        &mut self,
        at: HeadScreenBuffers,
        lm_head: DevPtr<f16>,
        vocab: usize,
        hidden: usize,
    ) -> Result<HeadScreen> {
        let groups = hidden.div_ceil(LM_HEAD_SCREEN_GROUP);
        if hidden % 16 != 0 || at.q.len != vocab * hidden / 4 || at.scales.len != vocab * groups {
            return Err(Error::Device(format!(
                "the memory plan's int8 head ({} words, {} scales) does not fit a {vocab} x {hidden} head",
                at.q.len, at.scales.len
            )));
        }
        let screen = HeadScreen { q: self.mem.at(at.q), scales: self.mem.at(at.scales), bytes: at.bytes() as u64 };
        self.staging.flush()?;
        let p = HeadScreenPackParams {
            w: lm_head,
            q: screen.q,
            scales: screen.scales,
            vocab: vocab as u32,
            k: hidden as u32,
        };
        let launch = shapes::lm_head_screen_pack(p.vocab, p.k).after_previous();
        // SAFETY: the head (vocab × hidden halves) lies in `mem`, its upload queued on this stream before the launch
        // (flush); q and scales are the plan's buffers in `mem`, sized for this head (checked above); `mem`
        // outlives the upload, which ends with a synchronize.
        unsafe { self.gpu.launch(&self.gpu.k.lm_head_screen_pack, launch, &p)? };
        self.done += at.q.bytes() + at.scales.bytes();
        Ok(screen)
    }

    fn upload_linear(&mut self, at: &TileBuffers, d: &DeviceLinear) -> Result<DevLinear> {
        let qw = self.put(at.qw, bytemuck::cast_slice(&d.qw))?;
        let sz = self.put(at.sz, &d.sz)?;
        let scales = match self.scales_at(at) {
            Some(buf) => self.put(buf, &layout::scales_only(&d.sz))?,
            None => DevPtr::NULL,
        };
        let col_map = self.put(at.col_map, &d.col_map)?;
        let (perm, inv) = match (&d.perm, &d.inv, at.perm, at.inv) {
            (Some(p), Some(i), Some(p_at), Some(i_at)) => (self.put(p_at, p)?, self.put(i_at, i)?),
            (None, None, None, None) => (DevPtr::NULL, DevPtr::NULL),
            _ => return Err(Error::Device("the plan and the repacked layout disagree on act-order".into())),
        };
        Ok(DevLinear {
            format: d.format,
            qw,
            sz,
            scales,
            perm,
            inv,
            part_slots: d.part_slots,
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

/// One part of a linear the device repack takes: its checkpoint tensors and shape.
struct RawPart<'m> {
    qweight: &'m TensorRef,
    qzeros: &'m TensorRef,
    scales: &'m TensorRef,
    k: usize,
    n: usize,
    group_size: usize,
    groups: usize,
}

/// The parts of a linear the device repack (`repack.cu`) can take: at most three GPTQ int4 parts sharing K and
/// grouping, every row in its group's order (no act-order), every width a multiple of 8 (whole `qzeros` words).
fn device_repack_sources<'m>(parts: &[&'m Linear]) -> Option<Vec<RawPart<'m>>> {
    if parts.len() > 3 {
        return None;
    }
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        let Linear::Gptq {
            bits: Bits::Four,
            qweight,
            qzeros,
            scales,
            in_features,
            out_features,
            group_size,
            groups,
            g_idx_is_trivial: true,
            ..
        } = part
        else {
            return None;
        };
        if out_features % 8 != 0 || in_features % 8 != 0 {
            return None;
        }
        let raw = RawPart {
            qweight,
            qzeros,
            scales,
            k: *in_features,
            n: *out_features,
            group_size: *group_size,
            groups: *groups,
        };
        if out.first().is_some_and(|f: &RawPart| (f.k, f.group_size, f.groups) != (raw.k, raw.group_size, raw.groups)) {
            return None;
        }
        out.push(raw);
    }
    Some(out)
}

/// Bytes the device repack's room needs: the largest linear's checkpoint tensors, each 16-byte aligned.
fn device_repack_room(model: &Model) -> usize {
    let d = &model.desc;
    let bytes = |parts: &[&Linear]| -> usize {
        device_repack_sources(parts).map_or(0, |src| {
            src.iter()
                .flat_map(|s| [s.qweight, s.qzeros, s.scales])
                .map(|t| model.bytes(t).len().next_multiple_of(16))
                .sum()
        })
    };
    d.layers
        .iter()
        .flat_map(|l| {
            let qkv: Vec<&Linear> = l.qkv.parts.iter().collect();
            [bytes(&qkv), bytes(&[&l.o_proj]), bytes(&[&l.gate_proj, &l.up_proj]), bytes(&[&l.down_proj])]
        })
        .max()
        .unwrap_or(0)
}

impl DeviceWeights {
    /// Every weight into its plan buffer; with `gpu_repack`, the GPTQ int4 linears without act-order repacked on
    /// the device ([`Uploader::linear_on_device`]), the others on the host.
    pub fn upload(
        gpu: &Device,
        model: &Model,
        plan: &MemoryPlan,
        tuning: &Tuning,
        progress: bool,
    ) -> Result<DeviceWeights> {
        let gpu_repack = tuning.gpu_repack;
        let d = &model.desc;
        let c = &d.config;
        let p = &plan.weights;
        let total = plan.region_size(Region::Weights);
        let mem = gpu.alloc(total, "the weights")?;
        let (embed, layers, norm, lm_head, lm_head_screen, rope_cos, rope_sin) = {
            let room = if gpu_repack { device_repack_room(model) } else { 0 };
            let raw = if room > 0 { Some(gpu.alloc(room, "the device repack's room")?) } else { None };
            let mut up = Uploader {
                gpu,
                staging: Staging::new(gpu)?,
                mem: &mem,
                raw,
                done: 0,
                total,
                progress,
                spare: Vec::new(),
                scales_only: tuning.gemv_sym && gpu.gemv_stream(tuning) != GemvStream::Ring,
            };

            let embed = up.tensor(p.embed, model, &d.embed_tokens)?;
            let q_dim = c.num_attention_heads * c.head_dim;
            let mut layers = Vec::with_capacity(d.layers.len());
            for ((l, layer), at) in d.layers.iter().enumerate().zip(&p.layers) {
                let name = |what: &str| format!("layers.{l}.{what}");
                let input_norm = up.tensor(at.input_norm, model, &layer.input_layernorm)?;
                let parts: Vec<&Linear> = layer.qkv.parts.iter().collect();
                let order = ColumnOrder::QkvRope { head_dim: c.head_dim, q_dim, kv_dim: c.kv_dim() };
                let qkv = up.linear(model, &parts, order, &at.qkv, &name("qkv"))?;
                let o = up.linear(model, &[&layer.o_proj], ColumnOrder::Identity, &at.o_proj, &name("o_proj"))?;
                let post_norm = up.tensor(at.post_norm, model, &layer.post_attention_layernorm)?;
                let order = ColumnOrder::gate_up(&layer.gate_proj, &layer.up_proj, c.intermediate_size);
                let gate_up =
                    up.linear(model, &[&layer.gate_proj, &layer.up_proj], order, &at.gate_up, &name("gate_up"))?;
                let down =
                    up.linear(model, &[&layer.down_proj], ColumnOrder::Identity, &at.down_proj, &name("down_proj"))?;
                layers.push(LayerWeights { input_norm, post_norm, qkv, o, gate_up, down });
            }
            let norm = up.tensor(p.norm, model, &d.norm)?;
            let lm_head = if d.lm_head == d.embed_tokens { embed } else { up.tensor(p.lm_head, model, &d.lm_head)? };
            let lm_head_screen =
                p.lm_head_screen.map(|at| up.head_screen(at, lm_head, c.vocab_size, c.hidden_size)).transpose()?;
            let rope = RopeTable::new(c.head_dim, c.rope_theta as f64, c.max_position_embeddings);
            let (cos, sin) = rope.tables();
            let rope_cos = up.put(p.rope_cos, cos)?;
            let rope_sin = up.put(p.rope_sin, sin)?;
            up.staging.finish()?;
            (embed, layers, norm, lm_head, lm_head_screen, rope_cos, rope_sin)
        };
        if progress {
            eprintln!();
        }
        Ok(DeviceWeights { mem, embed, layers, norm, lm_head, lm_head_screen, rope_cos, rope_sin })
    }
}

//! The device layout of GPTQ weights (int4 and int8), and the repacking from AutoGPTQ's layout into it.
//!
//! AutoGPTQ stores `qweight` as [K/8, N] words: a warp reading 32 consecutive columns of one row gets 128 bytes,
//! 4 bytes per lane. The decode GEMV wants 16 bytes per lane and every warp load fully contiguous, and its
//! epilogues want related output columns in the same tile (a rotary pair of q/k, a gate column with its up column).
//! So at load time each linear layer is rewritten once into tiles:
//!
//! - A **tile** is [`TILE_N`] output *slots*; `col_map[slot]` is the output column a slot computes (or
//!   [`PAD_SLOT`]). Within a tile, slot `j < 8` and slot `j + 8` are partners: the two halves of a rotary pair,
//!   or a gate column and its up column.
//! - A tile's K rows are walked in **steps** of [`STEP_K`] = 64 rows. For one (tile, step) the 32 lanes of a warp
//!   read 32 consecutive `uint4` (512 contiguous bytes): lane `l` gets the 32 rows `32·(2·step + l/16) ..` of slot
//!   `l % 16`, as 4 words of 8 nibbles each (low nibble first, as in AutoGPTQ).
//! - 8-bit GPTQ uses the same walk with two 16-byte words per lane and step (the first for all 32 lanes, then the
//!   second: each 512 contiguous bytes), bytes arranged by [`pack_chunk_int8`] so that they dequantize into the same
//!   pairs of rows as nibbles do.
//! - `sz[tile][group][slot]` holds `(scale, 1024 + zero)` as a half2, so the kernel turns a nibble into
//!   `q − zero` with one `lop3` (which makes the half `1024 + q`) and one exact half2 subtraction.
//! - With act-order (`g_idx` not `k / G`), rows are sorted by group first (`perm[k']` is the original row of
//!   sorted row `k'`), so every 32-row chunk lies in one group; the kernel gathers `x[perm[k']]` once per block.
//!   Each fused part (q, k, v; gate, up) is sorted by its own `g_idx`, as AutoGPTQ quantizes each linear on its
//!   own: the parts then occupy whole tiles each (`part_slots`), and a kernel stages one gathered input per part.
//!
//! K is padded to a multiple of [`STEP_K`] and N to a multiple of [`TILE_N`]; padded rows meet zeros in `x`, padded
//! slots are never written.

use engine_format::gptq::{self, Bits};
use engine_format::Linear;
use half::f16;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Floats, Model};

/// The tile's numbers, from the header the kernels include (`ptx/kernels/tile_layout.h`).
pub use engine_ptx::tile::{CHUNK_K, PAD_SLOT, STEP_K, TILE_N};

/// `part_slots` entry of a part that does not exist: past every slot.
pub const NO_PART: u32 = u32::MAX;

/// What the tiles hold per weight: a GPTQ int4 or int8 value (dequantized with its group's scale and zero), or an
/// fp16 weight (unquantized checkpoints; bf16 ones converted at load). The kernels come in one instance per format
/// (`gemv_int4_*`, `gemv_int8_*`, `gemv_f16_*`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileFormat {
    Int4,
    Int8,
    F16,
}

impl TileFormat {
    pub fn of_bits(bits: Bits) -> TileFormat {
        match bits {
            Bits::Four => TileFormat::Int4,
            Bits::Eight => TileFormat::Int8,
        }
    }
    /// Bits per weight in the tiles.
    pub const fn bits(self) -> usize {
        match self {
            TileFormat::Int4 => 4,
            TileFormat::Int8 => 8,
            TileFormat::F16 => 16,
        }
    }
    /// 16-byte words one lane reads per K step (32 rows of one slot): 1, 2 or 4.
    pub const fn lane_words(self) -> usize {
        self.bits() / 4
    }
}

/// One linear layer (or several fused along N) in the device layout, still in host memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLinear {
    /// What a weight is: 4 bits (one 16-byte word per lane and step), 8 bits (two, see [`pack_chunk_int8`]) or an
    /// fp16 number (four, see [`repack_dense_in`]).
    pub format: TileFormat,
    pub k: usize,
    pub k_pad: usize,
    pub n_pad: usize,
    pub groups: usize,
    /// Rows per group after sorting (a multiple of [`CHUNK_K`], or `k_pad` for one group).
    pub group_size: usize,
    /// The group of 32-row chunk `c` is `c >> chunk_shift` (`group_size / 32` is a power of two; 31 for one group).
    pub chunk_shift: u32,
    /// `[n_pad / TILE_N][k_pad / STEP_K][lane_words][32 lanes][4 words]`
    pub qw: Vec<u32>,
    /// `[n_pad / TILE_N][groups][TILE_N]` half2 bits: low half = scale, high half = 1024 + zero.
    pub sz: Vec<u32>,
    /// Original row of each sorted row, `k_pad` entries per fused part (`[parts][k_pad]`; padding rows point past
    /// `k`); `None` without act-order.
    pub perm: Option<Vec<u32>>,
    /// The inverse of `perm`, part by part: the sorted row of each original row (`[parts][k_pad]`; rows past `k`
    /// map to themselves). The kernel before this linear writes its input through it.
    pub inv: Option<Vec<u32>>,
    /// With a permutation per part: the first slot of parts 1 and 2 (each a whole number of tiles); `NO_PART`
    /// where there is no such part.
    pub part_slots: [u32; 2],
    /// Output column of each slot, `n_pad` entries.
    pub col_map: Vec<u32>,
}

#[cfg(test)]
impl DeviceLinear {
    pub fn tiles(&self) -> usize {
        self.n_pad / TILE_N
    }
    pub fn steps(&self) -> usize {
        self.k_pad / STEP_K
    }
}

/// The scales-only copy of a symmetric linear's (scale, 1024 + zero) words: each word's low half, in the same order
/// ([`engine_format::plan::TileBuffers::scales`]; the device repack writes the same in `repack_int4_scales`).
pub fn scales_only(sz: &[u32]) -> Vec<f16> {
    sz.iter().map(|&w| f16::from_bits(w as u16)).collect()
}

/// How the output columns of a fused projection are arranged into slots.
#[derive(Debug, Clone, Copy)]
pub enum ColumnOrder {
    /// Slot `s` computes column `s`.
    Identity,
    /// q/k/v: the q and k columns as rotary pairs (`d`, `d + head_dim/2` of one head in slots `j`, `j + 8`), then
    /// the v columns in order; q, k and v each start a tile.
    QkvRope { head_dim: usize, q_dim: usize, kv_dim: usize },
    /// gate/up fused (`gate` = columns `0..inter`, `up` = `inter..2·inter`): gate `i` in slot `j`, up `i` in `j + 8`.
    GateUp { inter: usize },
    /// gate/up fused with a row order each (act-order): the gate columns in order, then the up columns from the
    /// next tile on, so that up column `i` sits exactly `part_slots[0]` slots after gate column `i`.
    GateUpSplit { inter: usize },
}

impl ColumnOrder {
    /// The order of a fused gate/up of `inter` columns each: split with act-order (each part has its own row order),
    /// paired otherwise; the memory plan sizes it by the same rule.
    pub fn gate_up(gate: &Linear, up: &Linear, inter: usize) -> ColumnOrder {
        if engine_format::plan::gate_up_split(gate, up) {
            ColumnOrder::GateUpSplit { inter }
        } else {
            ColumnOrder::GateUp { inter }
        }
    }
}

/// Fused parts with a row order of their own, from a linear's `part_slots`: the inputs a kernel stages.
pub fn part_count(part_slots: [u32; 2]) -> u32 {
    1 + part_slots.iter().filter(|&&s| s != NO_PART).count() as u32
}

/// The slot → column map for `order` over `n` fused columns, padded to whole tiles.
pub fn column_map(order: ColumnOrder, n: usize) -> Vec<u32> {
    let half = TILE_N / 2;
    let mut map = Vec::new();
    // Place pairs (a_i, b_i) 8 per tile: a's in slots 0..8, b's in 8..16; a short last tile is padded.
    let pairs = |map: &mut Vec<u32>, list: &[(u32, u32)]| {
        for chunk in list.chunks(half) {
            let mut tile = [PAD_SLOT; TILE_N];
            for (j, &(a, b)) in chunk.iter().enumerate() {
                tile[j] = a;
                tile[j + half] = b;
            }
            map.extend_from_slice(&tile);
        }
    };
    match order {
        ColumnOrder::Identity => map.extend(0..n as u32),
        ColumnOrder::QkvRope { head_dim, q_dim, kv_dim } => {
            let h2 = head_dim / 2;
            let rope_pairs = |cols: std::ops::Range<usize>| -> Vec<(u32, u32)> {
                cols.step_by(head_dim)
                    .flat_map(|h| (0..h2).map(move |i| ((h + i) as u32, (h + h2 + i) as u32)))
                    .collect()
            };
            pairs(&mut map, &rope_pairs(0..q_dim));
            pairs(&mut map, &rope_pairs(q_dim..q_dim + kv_dim));
            map.extend((q_dim + kv_dim) as u32..(q_dim + 2 * kv_dim) as u32);
        }
        ColumnOrder::GateUp { inter } => {
            let gu: Vec<(u32, u32)> = (0..inter as u32).map(|i| (i, i + inter as u32)).collect();
            pairs(&mut map, &gu);
        }
        ColumnOrder::GateUpSplit { inter } => {
            map.extend(0..inter as u32);
            map.resize(inter.next_multiple_of(TILE_N), PAD_SLOT);
            map.extend(inter as u32..2 * inter as u32);
        }
    }
    map.resize(map.len().next_multiple_of(TILE_N), PAD_SLOT);
    map
}

/// Fused column `c` as (part, column within the part), for parts `widths` columns wide concatenated along N. The
/// column maps only name columns below the total.
fn locate_column(widths: &[usize], c: usize) -> (usize, usize) {
    let mut c = c;
    for (i, &w) in widths.iter().enumerate() {
        if c < w {
            return (i, c);
        }
        c -= w;
    }
    unreachable!("column map only names columns below the fused width")
}

/// How the tiles find a row's group: rows per group after sorting and the shift from a 32-row chunk to its group.
pub struct Grouping {
    /// Rows per group (`k_pad` for one group): a multiple of [`CHUNK_K`].
    pub group_size: usize,
    /// The group of 32-row chunk `c` is `c >> chunk_shift` (31 for one group).
    pub chunk_shift: u32,
}

/// The grouping of `k` rows in `groups` groups of `group_size` (as configured), or the error naming `what` if the
/// tiles cannot carry it (a group size that is not 32 times a power of two).
pub fn grouping(k: usize, group_size: usize, groups: usize, what: &str) -> Result<Grouping> {
    let eff_g = if groups == 1 { k.next_multiple_of(STEP_K) } else { group_size };
    if groups > 1 && !(eff_g % CHUNK_K == 0 && (eff_g / CHUNK_K).is_power_of_two()) {
        return Err(Error::BackendUnavailable(format!(
            "{what}: group size {group_size} is not {CHUNK_K} times a power of two (32, 64, 128, 256, ...); \
             run this checkpoint with --backend cpu"
        )));
    }
    let chunk_shift = if groups > 1 { (eff_g / CHUNK_K).trailing_zeros() } else { 31 };
    Ok(Grouping { group_size: eff_g, chunk_shift })
}

/// Views of one GPTQ linear's tensors, as AutoGPTQ lays them out.
#[derive(Clone, Copy)]
pub struct GptqParts<'a> {
    pub qweight: &'a [u32],
    pub qzeros: &'a [u32],
    pub scales: &'a [f16],
    pub g_idx: &'a [u32],
    /// Output columns.
    pub n: usize,
    /// Bits per weight of `qweight` and `qzeros`.
    pub bits: Bits,
}

/// Repack GPTQ `parts` (concatenated along N, sharing K, group size and `g_idx`) into the device layout, with
/// slots arranged by `order`, into `qw`'s memory (its contents are discarded). `what` names the projection in
/// errors. Passing back the words of the previous linear saves the page faults of a fresh multi-megabyte
/// allocation per layer, which were most of the loading time.
pub fn repack_in(
    model: &Model,
    parts: &[&Linear],
    order: ColumnOrder,
    what: &str,
    qw: Vec<u32>,
) -> Result<DeviceLinear> {
    let mut views = Vec::with_capacity(parts.len());
    let (mut k, mut group_size, mut groups) = (0, 0, 0);
    for (i, part) in parts.iter().enumerate() {
        let Linear::Gptq {
            bits,
            qweight,
            qzeros,
            scales,
            g_idx,
            in_features,
            out_features,
            group_size: g,
            groups: ng,
            ..
        } = part
        else {
            return Err(Error::BackendUnavailable(format!(
                "{what}: the CUDA backend runs GPTQ linears; unquantized checkpoints run on --backend cpu"
            )));
        };
        if i == 0 {
            (k, group_size, groups) = (*in_features, *g, *ng);
        } else if (*in_features, *g, *ng) != (k, group_size, groups) {
            return Err(Error::BackendUnavailable(format!(
                "{what}: fused parts differ in K or grouping ({in_features}/{g} vs {k}/{group_size})"
            )));
        }
        views.push(GptqParts {
            qweight: model.u32(qweight),
            qzeros: model.u32(qzeros),
            scales: model.f16(scales),
            g_idx: model.u32(g_idx),
            n: *out_features,
            bits: *bits,
        });
    }
    repack_parts_in(&views, k, group_size, groups, order, what, qw)
}

/// A linear of either kind into the tiles: [`repack_in`] for GPTQ, [`repack_dense_in`] for unquantized weights.
pub fn repack_linear_in(
    model: &Model,
    parts: &[&Linear],
    order: ColumnOrder,
    what: &str,
    qw: Vec<u32>,
) -> Result<DeviceLinear> {
    match parts[0] {
        Linear::Gptq { .. } => repack_in(model, parts, order, what, qw),
        Linear::Dense { .. } => repack_dense_in(model, parts, order, what, qw),
    }
}

/// [`repack_in`] over raw tensors into a fresh buffer: `k` input rows, `group_size` rows per group (as
/// configured), `groups` groups.
#[cfg(test)]
pub fn repack_parts(
    views: &[GptqParts<'_>],
    k: usize,
    group_size: usize,
    groups: usize,
    order: ColumnOrder,
    what: &str,
) -> Result<DeviceLinear> {
    repack_parts_in(views, k, group_size, groups, order, what, Vec::new())
}

fn repack_parts_in(
    views: &[GptqParts<'_>],
    k: usize,
    group_size: usize,
    groups: usize,
    order: ColumnOrder,
    what: &str,
    mut qw: Vec<u32>,
) -> Result<DeviceLinear> {
    let n_total: usize = views.iter().map(|v| v.n).sum();
    let bits = views[0].bits;
    if views.iter().any(|v| v.bits != bits) {
        return Err(Error::BackendUnavailable(format!("{what}: fused parts differ in bits per weight")));
    }
    let Grouping { group_size: eff_g, chunk_shift } = grouping(k, group_size, groups, what)?;

    // Sort each part's rows by its group. A stable sort keeps the order the identity when g_idx is already k / G.
    let mut perms: Vec<Vec<u32>> = Vec::with_capacity(views.len());
    for (i, v) in views.iter().enumerate() {
        let mut perm: Vec<u32> = (0..k as u32).collect();
        perm.sort_by_key(|&r| v.g_idx[r as usize]);
        // After sorting, the group of sorted row k' must be k' / G for a G that chunks of 32 rows never straddle.
        let sorted_group = |kk: usize| v.g_idx[perm[kk] as usize] as usize;
        if let Some(bad) = (0..k).find(|&kk| sorted_group(kk) != kk / eff_g) {
            return Err(Error::BackendUnavailable(format!(
                "{what}: g_idx of part {i} is not a permutation of equal groups of {group_size} rows (sorted row \
                 {bad} is in group {}); run this checkpoint with --backend cpu",
                sorted_group(bad)
            )));
        }
        perms.push(perm);
    }
    let act_order = perms.iter().any(|p| p.iter().enumerate().any(|(i, &r)| i as u32 != r));

    let col_map = column_map(order, n_total);
    let n_pad = col_map.len();
    let k_pad = k.next_multiple_of(STEP_K);
    let (tiles, steps) = (n_pad / TILE_N, k_pad / STEP_K);

    // Locate fused column c: its part and its column in the part.
    let widths: Vec<usize> = views.iter().map(|v| v.n).collect();
    let locate = |c: usize| locate_column(&widths, c);
    // With act-order, every part brings its own row order, so a tile must hold columns of one part only, and the
    // parts must follow each other in tile order (the kernels find a tile's part from `part_slots`).
    let mut part_slots = [NO_PART; 2];
    if act_order && views.len() > 1 {
        let mut part_of_tile = Vec::with_capacity(tiles);
        for (t, tile) in col_map.chunks(TILE_N).enumerate() {
            let parts: Vec<usize> = tile.iter().filter(|&&c| c != PAD_SLOT).map(|&c| locate(c as usize).0).collect();
            let part = parts.first().copied().unwrap_or(part_of_tile.last().copied().unwrap_or(0));
            if parts.iter().any(|&p| p != part) || part_of_tile.last().is_some_and(|&last| part < last) {
                return Err(Error::BackendUnavailable(format!(
                    "{what}: tile {t} mixes fused parts that have different act-order permutations (the column \
                     order {order:?} cannot carry a permutation per part); run this checkpoint with --backend cpu"
                )));
            }
            part_of_tile.push(part);
        }
        for (p, at) in part_slots.iter_mut().enumerate().take(views.len() - 1) {
            *at = part_of_tile.iter().position(|&q| q > p).map_or(NO_PART, |t| (t * TILE_N) as u32);
        }
    }
    // Each tile's words and scales are contiguous, so tiles are repacked in parallel.
    // 16-byte words per lane and step: one of 32 nibbles, two of 32 bytes.
    let lane_words = bits.count() as usize / 4;
    qw.clear();
    qw.resize(n_pad * k_pad * lane_words / 8, 0);
    let mut sz = vec![0u32; tiles * groups * TILE_N];
    let words_per_row = k.div_ceil(8); // AutoGPTQ words per column (4 bits)
    qw.par_chunks_mut(steps * 32 * 4 * lane_words).zip(sz.par_chunks_mut(groups * TILE_N)).enumerate().for_each(
        |(t, (qw_t, sz_t))| {
            let slots: [Option<(usize, usize)>; TILE_N] = std::array::from_fn(|j| {
                let slot = col_map[t * TILE_N + j];
                (slot != PAD_SLOT).then(|| locate(slot as usize))
            });
            for (j, &(part, n)) in slots.iter().enumerate().filter_map(|(j, s)| s.as_ref().map(|s| (j, s))) {
                let v = &views[part];
                for g in 0..groups {
                    let scale = v.scales[g * v.n + n];
                    let zero = bits.zero_at(v.qzeros, v.n, g, n) as f32;
                    let z = f16::from_f32(1024.0 + zero); // exact: 1025..=1040 (4 bits), 1025..=1280 (8 bits)
                    sz_t[g * TILE_N + j] = scale.to_bits() as u32 | (z.to_bits() as u32) << 16;
                }
            }
            if !act_order && bits == Bits::Four {
                // Rows keep their order: each device word is a checkpoint word. Walk the checkpoint row by row
                // and take the tile's 16 columns of each word row together (they share one or a few cache
                // lines), instead of column by column down the whole matrix: ~2x faster loading, measured.
                for word_row in 0..words_per_row {
                    let (chunk, w) = (word_row / 4, word_row % 4);
                    let (s, half) = (chunk / 2, chunk % 2);
                    let base = (s * 32 + half * TILE_N) * 4 + w;
                    for (j, slot) in slots.iter().enumerate() {
                        if let Some((part, n)) = *slot {
                            let v = &views[part];
                            qw_t[base + j * 4] = v.qweight[word_row * v.n + n];
                        }
                    }
                }
                return;
            }
            // Value by value: act-order gathers the sorted rows, and 8-bit bytes are rearranged within each chunk
            // (a word-level interleave of the rows-in-order case measured no faster: the walk is bound by memory).
            // Row by row across the tile's 16 columns (which share the part, and so the row order, and lie in one
            // or two cache lines of each checkpoint row), rather than column by column down the matrix: the
            // gathered rows come in random order, and a column at a time would touch a new line per value.
            // The slots share a row order: a tile holds one part where the parts' orders differ (checked above),
            // and otherwise every part's order is the same. Padding slots read column 0 of part 0, never stored.
            let Some(first) = slots.iter().flatten().map(|&(part, _)| part).next() else { return };
            let perm = &perms[first];
            let cols: [(&[u32], usize, usize); TILE_N] = std::array::from_fn(|j| {
                let (part, n) = slots[j].unwrap_or((0, 0));
                (views[part].qweight, views[part].n, n)
            });
            let per_word = 32 / bits.count() as usize;
            for s in 0..steps {
                for half in 0..2 {
                    // The 16 slots' 32-row chunk of the sorted column; rows past k are zero.
                    let base = (2 * s + half) * CHUNK_K;
                    let mut q = [[0u32; CHUNK_K]; TILE_N];
                    for i in 0..CHUNK_K.min(k.saturating_sub(base)) {
                        let row = perm[base + i] as usize;
                        let (word_row, field) = (row / per_word, row % per_word);
                        for (q, &(qweight, n_cols, n)) in q.iter_mut().zip(&cols) {
                            q[i] = bits.field(qweight[word_row * n_cols + n], field);
                        }
                    }
                    for (j, q) in q.iter().enumerate().filter(|(j, _)| slots[*j].is_some()) {
                        let lane = half * TILE_N + j;
                        match bits {
                            Bits::Four => {
                                for w in 0..4 {
                                    let word: [u32; 8] = std::array::from_fn(|i| q[8 * w + i]);
                                    qw_t[(s * 32 + lane) * 4 + w] = gptq::pack8(word);
                                }
                            }
                            Bits::Eight => {
                                let words = pack_chunk_int8(q);
                                for (u, four) in words.chunks(4).enumerate() {
                                    let at = ((s * 2 + u) * 32 + lane) * 4;
                                    qw_t[at..at + 4].copy_from_slice(four);
                                }
                            }
                        }
                    }
                }
            }
        },
    );
    let perm = act_order.then(|| {
        perms
            .iter()
            .flat_map(|p| {
                let mut p = p.clone();
                p.resize(k_pad, k as u32);
                p
            })
            .collect()
    });
    let inv = perm.as_ref().map(|perm: &Vec<u32>| {
        let mut inv: Vec<u32> = (0..perm.len() as u32).map(|i| i % k_pad as u32).collect();
        for (part, rows) in perm.chunks(k_pad).enumerate() {
            for (sorted, &orig) in rows.iter().enumerate().take(k) {
                inv[part * k_pad + orig as usize] = sorted as u32;
            }
        }
        inv
    });
    Ok(DeviceLinear {
        format: TileFormat::of_bits(bits),
        k,
        k_pad,
        n_pad,
        groups,
        group_size: eff_g,
        chunk_shift,
        qw,
        sz,
        perm,
        inv,
        part_slots,
        col_map,
    })
}

/// Repack unquantized `parts` (each `[out][in]` fp16 or bf16, as PyTorch stores a linear's weight; fused along N)
/// into fp16 tiles with slots arranged by `order`, into `qw`'s memory. Each lane's 32 rows of a slot are four
/// 16-byte words, one per 8-row group `r0..r7`, holding the pairs `(r0, r4), (r1, r5), (r2, r6), (r3, r7)`: the order
/// in which the GPTQ dequantizers produce weights, so the staged input and the FMA/MMA code are shared. One group
/// with scale 1. bf16 weights are rounded to fp16 (the kernels' operand type); one outside fp16's range is an error
/// naming the tensor.
pub fn repack_dense_in(
    model: &Model,
    parts: &[&Linear],
    order: ColumnOrder,
    what: &str,
    qw: Vec<u32>,
) -> Result<DeviceLinear> {
    let mut views = Vec::with_capacity(parts.len());
    for part in parts {
        let Linear::Dense { weight, in_features, out_features } = part else {
            return Err(Error::BackendUnavailable(format!(
                "{what}: fused parts mix quantized and unquantized linears"
            )));
        };
        if *in_features != parts[0].in_features() {
            return Err(Error::BackendUnavailable(format!("{what}: fused parts differ in K")));
        }
        views.push((model.floats(weight), *out_features, weight.name.as_str()));
    }
    repack_dense_parts_in(&views, parts[0].in_features(), order, what, qw)
}

/// [`repack_dense_in`] over `(weights, out_features, tensor name)` views.
pub fn repack_dense_parts_in(
    views: &[(Floats<'_>, usize, &str)],
    k: usize,
    order: ColumnOrder,
    what: &str,
    mut qw: Vec<u32>,
) -> Result<DeviceLinear> {
    let n_total: usize = views.iter().map(|v| v.1).sum();
    let col_map = column_map(order, n_total);
    let (n_pad, k_pad) = (col_map.len(), k.next_multiple_of(STEP_K));
    let (tiles, steps) = (n_pad / TILE_N, k_pad / STEP_K);
    let widths: Vec<usize> = views.iter().map(|v| v.1).collect();
    let locate = |c: usize| locate_column(&widths, c);
    let lane_words = TileFormat::F16.lane_words();
    qw.clear();
    qw.resize(n_pad * k_pad * lane_words / 8, 0);
    // Every slot one group of (scale 1, 1024 + zero 0): the GEMMs multiply by the scale, which is exact.
    let unit = f16::ONE.to_bits() as u32 | (f16::from_f32(1024.0).to_bits() as u32) << 16;
    let sz = vec![unit; tiles * TILE_N];
    let overflow = std::sync::Mutex::new(None);
    qw.par_chunks_mut(steps * 32 * 4 * lane_words).enumerate().for_each(|(t, qw_t)| {
        // One slot's K weights as fp16 bits, zero past K (the padded rows must be finite).
        let mut row = vec![0u16; k_pad];
        for j in 0..TILE_N {
            let col = col_map[t * TILE_N + j];
            if col == PAD_SLOT {
                continue;
            }
            let (part, n) = locate(col as usize);
            let (w, _, name) = views[part];
            if let Err(i) = fp16_bits(w, n * k, &mut row[..k]) {
                *overflow.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "{what}: `{name}` holds {} at row {n}, column {i}, outside float16's range (the CUDA backend \
                     computes in float16); run this checkpoint with --backend cpu",
                    w.to_f32_vec(n * k + i, 1)[0]
                ));
                return;
            }
            // Each 8-row group of a lane's chunk is one 16-byte word of the pairs (r, r + 4).
            for (c, rows) in row.chunks_exact(CHUNK_K).enumerate() {
                let (s, h) = (c / 2, c % 2);
                let lane = h * TILE_N + j;
                for (group, r) in rows.chunks_exact(8).enumerate() {
                    let at = ((s * lane_words + group) * 32 + lane) * 4;
                    let pair = |i: usize| r[i] as u32 | (r[i + 4] as u32) << 16;
                    qw_t[at..at + 4].copy_from_slice(&[pair(0), pair(1), pair(2), pair(3)]);
                }
            }
        }
    });
    if let Some(msg) = overflow.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(Error::BackendUnavailable(msg));
    }
    Ok(DeviceLinear {
        format: TileFormat::F16,
        k,
        k_pad,
        n_pad,
        groups: 1,
        group_size: k_pad,
        chunk_shift: 31,
        qw,
        sz,
        perm: None,
        inv: None,
        part_slots: [NO_PART; 2],
        col_map,
    })
}

/// An 8-bit chunk (32 rows of one slot) as the tiles hold it: 8 words, and in each 8-row group `r0..r7` two words,
/// bytes `[r0, r4, r1, r5]` and `[r2, r6, r3, r7]`. Why: a byte permute (`prmt`) of such a word with 0x64 bytes
/// gives two fp16 pairs `1024 + (r_i, r_i+4)` — the same (row i, row i + 4) pairs the int4 dequantizer produces from
/// a nibble word, so the staged input, the FMAs and the MMA operand layouts are shared by both widths.
pub fn pack_chunk_int8(q: &[u32; CHUNK_K]) -> [u32; 8] {
    const ORDER: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];
    std::array::from_fn(|w| {
        let (group, second) = (w / 2, w % 2);
        (0..4).fold(0u32, |word, b| word | (q[8 * group + ORDER[4 * second + b]] & 0xFF) << (8 * b))
    })
}

/// A whole float tensor as fp16 bits ([`fp16_bits`] over chunks in parallel: an embedding table is ~10^8 values);
/// `Err(i)` names the first element that overflows fp16.
pub fn fp16_tensor(w: Floats<'_>) -> std::result::Result<Vec<u16>, usize> {
    const CHUNK: usize = 1 << 16;
    let mut bits = vec![0u16; w.len()];
    let overflow = bits
        .par_chunks_mut(CHUNK)
        .enumerate()
        .find_map_first(|(c, out)| fp16_bits(w, c * CHUNK, out).err().map(|i| c * CHUNK + i));
    overflow.map_or(Ok(bits), Err)
}

/// Elements `start..start + out.len()` of `w` as fp16 bits: fp16 as stored, bf16 rounded to nearest; `Err(i)` for
/// the first element `i` whose value overflows fp16.
fn fp16_bits(w: Floats<'_>, start: usize, out: &mut [u16]) -> std::result::Result<(), usize> {
    match w {
        Floats::F16(v) => {
            for (o, x) in out.iter_mut().zip(&v[start..]) {
                *o = x.to_bits();
            }
        }
        Floats::Bf16(v) => {
            for (i, (o, x)) in out.iter_mut().zip(&v[start..]).enumerate() {
                let h = f16::from_f32(x.to_f32());
                if h.is_infinite() && x.is_finite() {
                    return Err(i);
                }
                *o = h.to_bits();
            }
        }
    }
    Ok(())
}

/// Value `i` (row `i` of the chunk) of an 8-bit chunk packed by [`pack_chunk_int8`].
#[cfg(test)]
pub fn chunk_int8_value(words: &[u32; 8], i: usize) -> u32 {
    const SLOT: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7]; // byte position of row r within its group's 8 bytes
    let (group, r) = (i / 8, i % 8);
    let byte = SLOT[r];
    (words[2 * group + byte / 4] >> (8 * (byte % 4))) & 0xFF
}

/// The dequantized weight `W[k][column]` of a repacked linear, read back through the device layout exactly as the
/// kernels index it. Tests compare this with the checkpoint's own dequantization.
#[cfg(test)]
pub fn dequant_device(d: &DeviceLinear, slot: usize, sorted_row: usize) -> f32 {
    let (t, j) = (slot / TILE_N, slot % TILE_N);
    let chunk = sorted_row / CHUNK_K;
    let (s, half) = (chunk / 2, chunk % 2);
    let lane = half * TILE_N + j;
    let q = match d.format {
        TileFormat::F16 => {
            let (group, j) = ((sorted_row % CHUNK_K) / 8, sorted_row % 4);
            let word = d.qw[(((t * d.steps() + s) * 4 + group) * 32 + lane) * 4 + j];
            let half = if sorted_row % 8 < 4 { word as u16 } else { (word >> 16) as u16 };
            return f16::from_bits(half).to_f32();
        }
        TileFormat::Int4 => {
            let w = (sorted_row % CHUNK_K) / 8;
            let word = d.qw[((t * d.steps() + s) * 32 + lane) * 4 + w];
            gptq::nibble(word, sorted_row % 8) as f32
        }
        TileFormat::Int8 => {
            let words: [u32; 8] =
                std::array::from_fn(|w| d.qw[(((t * d.steps() + s) * 2 + w / 4) * 32 + lane) * 4 + w % 4]);
            chunk_int8_value(&words, sorted_row % CHUNK_K) as f32
        }
    };
    let g = sorted_row / d.group_size;
    let sz = d.sz[(t * d.groups + g) * TILE_N + j];
    let scale = f16::from_bits(sz as u16).to_f32();
    let zero = f16::from_bits((sz >> 16) as u16).to_f32() - 1024.0;
    scale * (q - zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qkv_map_pairs_rotary_halves_and_keeps_v_in_order() {
        let map = column_map(ColumnOrder::QkvRope { head_dim: 8, q_dim: 16, kv_dim: 8 }, 32);
        // 3 heads of q/k → 12 pairs → 2 tiles (second padded), then 8 v columns in one padded tile.
        assert_eq!(map.len(), 48);
        assert_eq!(&map[..8], &[0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(&map[8..16], &[4, 5, 6, 7, 12, 13, 14, 15]);
        assert_eq!(&map[16..20], &[16, 17, 18, 19]);
        assert_eq!(map[20], PAD_SLOT);
        assert_eq!(&map[24..28], &[20, 21, 22, 23]);
        assert_eq!(&map[32..40], &[24, 25, 26, 27, 28, 29, 30, 31]);
        let mut seen: Vec<u32> = map.iter().copied().filter(|&c| c != PAD_SLOT).collect();
        seen.sort();
        assert_eq!(seen, (0..32).collect::<Vec<_>>());
    }

    #[test]
    fn gate_up_map_puts_partners_eight_apart() {
        let map = column_map(ColumnOrder::GateUp { inter: 20 }, 40);
        assert_eq!(map.len(), 48);
        for (t, tile) in map.chunks(TILE_N).enumerate() {
            for j in 0..8 {
                if tile[j] != PAD_SLOT {
                    assert_eq!(tile[j] as usize, t * 8 + j);
                    assert_eq!(tile[j + 8], tile[j] + 20);
                }
            }
        }
    }
}

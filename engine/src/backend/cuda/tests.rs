//! Every kernel against a float64 CPU counterpart, on fresh random inputs of many shapes, with outputs poisoned
//! (NaN) before each launch so that an unwritten element fails the check.
//!
//! These need a GPU, so they are `#[ignore]`d in ordinary test runs; the GPU suite (`tests/gpu/suite.sh`) runs
//! them with `--ignored`. On a machine without a GPU they fail loudly rather than pass.

use bytemuck::Pod;
use half::f16;

use super::driver::{DevPtr, DeviceBuffer, Kernel, KernelParams, Launch};
use super::kernels::*;
use super::layout::{self, ColumnOrder, DeviceLinear, GptqParts, TileFormat, PAD_SLOT, TILE_N};
use super::shapes::{
    self, gemm_small_per_split, gemm_small_shape, gemm_smem_bytes, GemmTile, GemvStream, InputOrder,
    GEMM128_SMEM_BYTES, GEMM_SMALL_MAX_STEPS_PER_SPLIT, GEMM_WGMMA256_SMEM_BYTES, GEMM_WGMMA_SHORT_SMEM_BYTES,
    GEMM_WGMMA_SMEM_BYTES, GEMM_WGMMA_WREG_SMEM_BYTES, GEMM_WGMMA_WS_SMEM_BYTES,
};
use super::tuning::Tuning;
use crate::backend::rope::RopeTable;
use crate::model::Floats;
use crate::sampling::SamplerParams;
use engine_format::gptq::Bits;
use engine_format::plan;
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------------------------
// Harness

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn vec_f16(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f16> {
        (0..n).map(|_| f16::from_f64(self.uniform(lo, hi))).collect()
    }
    fn vec_f32(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi) as f32).collect()
    }
}

fn gpu() -> Device {
    Device::open(0, &Tuning::default())
        .expect("the CUDA kernel tests need a CUDA device (run them through tests/gpu/suite.sh)")
}

fn put<T: Pod>(g: &Device, data: &[T]) -> DeviceBuffer {
    let m = g.alloc(std::mem::size_of_val(data), "test input").unwrap();
    set(g, &m, data);
    m
}

/// Overwrite the start of `m` with `data`.
fn set<T: Pod>(g: &Device, m: &DeviceBuffer, data: &[T]) {
    g.upload(m, m.all(), data).unwrap();
}

/// A device buffer of `bytes` bytes filled with NaN bits (0xFF bytes: NaN in f32 and f16), by `fill_u32` where
/// the size allows.
fn poisoned(g: &Device, bytes: usize) -> DeviceBuffer {
    if bytes % 4 != 0 {
        return put(g, &vec![0xFFu8; bytes]);
    }
    let m = g.alloc(bytes, "test output").unwrap();
    let p = FillParams { p: m.ptr(), n: (bytes / 4) as u64, value: u32::MAX };
    launch(g, &g.k.fill_u32, Launch::new(2 * g.limits.sm_count, 256, 0), &p);
    g.sync().unwrap();
    m
}

fn get<T: Pod + Default>(g: &Device, m: &DeviceBuffer, n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    g.download(&mut v, m, m.all()).unwrap();
    v
}

/// Launch `kernel` and return when it is queued. Every test builds `p` from buffers it allocated for the sizes in
/// `p` and `l` (that is what makes the launch sound), and checks the results after `g.sync()`.
fn launch<P: KernelParams>(g: &Device, kernel: &Kernel<P>, l: Launch, p: &P) {
    // SAFETY: see the function's comment.
    unsafe { g.launch(kernel, l, p) }.unwrap();
}

fn f16s(v: &[u16]) -> Vec<f64> {
    v.iter().map(|&b| f16::from_bits(b).to_f64()).collect()
}

/// ‖got − want‖ / ‖want‖, failing on any non-finite value.
fn rel_l2(got: &[f64], want: &[f64], what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("{what}: element {i} is {} (unwritten or overflowed)", got[i]);
    }
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b) * (a - b)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den.max(1e-300)).sqrt()
}

/// The half input as the kernels write it (`half_input` in ptx/kernels/tiles.cuh): x · w · HALF_INPUT_SCALE in
/// fp16, saturated.
fn half_input(x_times_w: f32) -> f16 {
    f16::from_f32((x_times_w * shapes::HALF_INPUT_SCALE).clamp(-65504.0, 65504.0))
}

/// The half input of a whole row `x` with the norm weight `w`.
fn half_inputs(x: &[f32], w: &[f16]) -> Vec<f16> {
    x.iter().zip(w).map(|(&a, b)| half_input(a * b.to_f32())).collect()
}

fn check(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let e = rel_l2(got, want, what);
    assert!(e <= tol, "{what}: relative L2 error {e:.3e} > {tol:.1e}");
}

/// A random AutoGPTQ linear (K × N, group size G or one group, optional act-order, sym or asym) with its exact
/// dense float64 matrix W[k][n].
struct RandLinear {
    bits: Bits,
    k: usize,
    n: usize,
    group_size: usize,
    groups: usize,
    qweight: Vec<u32>,
    qzeros: Vec<u32>,
    scales: Vec<f16>,
    g_idx: Vec<u32>,
}

impl RandLinear {
    fn new(rng: &mut Rng, k: usize, n: usize, group: Option<usize>, act_order: bool, sym: bool) -> Self {
        Self::of_width(rng, Bits::Four, k, n, group, act_order, sym)
    }

    /// A random GPTQ linear of `bits` per weight (symmetric: the zero point in the middle of the range).
    fn of_width(
        rng: &mut Rng,
        bits: Bits,
        k: usize,
        n: usize,
        group: Option<usize>,
        act_order: bool,
        sym: bool,
    ) -> Self {
        let group_size = group.unwrap_or(k);
        let groups = k.div_ceil(group_size);
        let mut g_idx: Vec<u32> = (0..k).map(|r| (r / group_size) as u32).collect();
        if act_order {
            // AutoGPTQ's structure: g_idx[perm[i]] = i / G for a random permutation.
            let mut perm: Vec<usize> = (0..k).collect();
            for i in (1..k).rev() {
                perm.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for (i, &p) in perm.iter().enumerate() {
                g_idx[p] = (i / group_size) as u32;
            }
        }
        let per_word = bits.per_word();
        let qweight = (0..k / per_word * n).map(|_| rng.next() as u32).collect();
        let mid = bits.pack(&vec![bits.max_value() / 2; per_word]); // stored zero 7 (real 8) / 127 (real 128)
        let qzeros = (0..groups * n / per_word).map(|_| if sym { mid } else { rng.next() as u32 }).collect();
        // 8 bits: q − z spans 16 times the range, so scales 16 times smaller give weights of the same size.
        let scale = 16f64.powi(if bits == Bits::Eight { -1 } else { 0 });
        let scales = rng.vec_f16(groups * n, 0.002 * scale, 0.02 * scale);
        RandLinear { bits, k, n, group_size, groups, qweight, qzeros, scales, g_idx }
    }

    fn parts(&self) -> GptqParts<'_> {
        GptqParts {
            qweight: &self.qweight,
            qzeros: &self.qzeros,
            scales: &self.scales,
            g_idx: &self.g_idx,
            n: self.n,
            bits: self.bits,
        }
    }

    fn w(&self, k: usize, n: usize) -> f64 {
        let g = self.g_idx[k] as usize;
        let q = self.bits.q_at(&self.qweight, self.n, k, n) as f64;
        let z = self.bits.zero_at(&self.qzeros, self.n, g, n) as f64;
        self.scales[g * self.n + n].to_f64() * (q - z)
    }

    /// y[n] = Σ_k x[k] W[k][n].
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        let mut y = vec![0f64; self.n];
        for (k, &xk) in x.iter().enumerate().take(self.k) {
            for (n, y) in y.iter_mut().enumerate() {
                *y += xk * self.w(k, n);
            }
        }
        y
    }

    /// Y[r][n] = Σ_k A[r][k] W[k][n] for the `m` rows of `a` ([m][k]), column by column in parallel (each column of
    /// W decoded once, however many rows).
    fn apply_rows(&self, a: &[f64], m: usize) -> Vec<f64> {
        let k = self.k;
        let cols: Vec<Vec<f64>> = (0..self.n)
            .into_par_iter()
            .map(|n| {
                let w: Vec<f64> = (0..k).map(|kk| self.w(kk, n)).collect();
                (0..m).map(|r| a[r * k..(r + 1) * k].iter().zip(&w).map(|(x, w)| x * w).sum()).collect()
            })
            .collect();
        (0..m).flat_map(|r| cols.iter().map(move |c| c[r])).collect()
    }

    fn repack(&self, order: ColumnOrder) -> DeviceLinear {
        layout::repack_parts(&[self.parts()], self.k, self.group_size, self.groups, order, "test").unwrap()
    }
}

struct DevLin {
    _mem: Vec<DeviceBuffer>,
    p: GemvParams,
    d: DeviceLinear,
    /// The scales-only copy of `sz` (what a symmetric linear's `GemvParams::scales` points at; `p` leaves it null).
    scales: DevPtr<f16>,
}

fn upload_linear(g: &Device, d: DeviceLinear) -> DevLin {
    let qw = put(g, &d.qw);
    let sz = put(g, &d.sz);
    let sc = put(g, &layout::scales_only(&d.sz));
    let cm = put(g, &d.col_map);
    let p = GemvParams {
        qw: qw.ptr(),
        sz: sz.ptr(),
        col_map: cm.ptr(),
        k: d.k as u32,
        k_pad: d.k_pad as u32,
        n_pad: d.n_pad as u32,
        groups: d.groups as u32,
        group_size: d.group_size as u32,
        chunk_shift: d.chunk_shift,
        part_slot1: d.part_slots[0],
        part_slot2: d.part_slots[1],
        tiles_per_block: 1,
        eps: 1e-6,
        ..Default::default()
    };
    DevLin { scales: sc.ptr(), _mem: vec![qw, sz, sc, cm], p, d }
}

impl DevLin {
    /// The GEMM parameters of this linear over `m` rows of `a` (row stride `lda`) into rows of stride `ldy`.
    fn gemm(&self, a: DevPtr<f16>, m: usize, lda: usize, ldy: usize) -> GemmParams {
        GemmParams {
            qw: self.p.qw,
            sz: self.p.sz,
            col_map: self.p.col_map,
            a,
            m: m as u32,
            k: self.d.k as u32,
            k_pad: self.p.k_pad,
            n_pad: self.p.n_pad,
            groups: self.p.groups,
            group_size: self.p.group_size,
            lda: lda as u32,
            ldy: ldy as u32,
            ..Default::default()
        }
    }
}

fn gemv(g: &Device, s: GemvStream, f: &Kernel<GemvParams>, lin: &DevLin, p: &GemvParams) {
    gemv_warps(g, s, f, 8, lin, p)
}

fn gemv_warps(g: &Device, s: GemvStream, f: &Kernel<GemvParams>, warps: u32, lin: &DevLin, p: &GemvParams) {
    gemv_units(g, s, f, warps, lin.d.tiles() as u32, lin, p)
}

/// A GEMV launch over `units` units of work (tiles, or the split gate/up's pairs of tiles); `f` one of the kernels
/// that stream by `s`.
fn gemv_units(g: &Device, s: GemvStream, f: &Kernel<GemvParams>, warps: u32, units: u32, lin: &DevLin, p: &GemvParams) {
    let grid = units.div_ceil(p.tiles_per_block);
    let inputs = layout::part_count(lin.d.part_slots);
    launch(g, f, gemv_launch(s, grid, warps, lin.p.k_pad, inputs, lin.d.format), p);
    g.sync().unwrap();
}

/// `grid` GEMV blocks of `warps` multiplying warps over K `k_pad` staging `inputs` inputs, of the kernels that
/// stream by `s` (a ring kernel has one more warp and its ring in shared memory).
fn gemv_launch(s: GemvStream, grid: u32, warps: u32, k_pad: u32, inputs: u32, format: TileFormat) -> Launch {
    let smem = shapes::gemv_smem(k_pad, warps, inputs, format, s);
    Launch::new((grid, 1, 1), shapes::gemv_threads(warps, s), smem)
}

/// The ways this device's GEMVs can stream their weights: in registers (with either K loop), and on the ring where
/// the card has it.
fn streams(g: &Device) -> Vec<GemvStream> {
    let mut all = vec![GemvStream::Registers, GemvStream::Lean];
    if g.has_wgmma() {
        all.push(GemvStream::Ring);
    }
    all
}

/// The part (index into the fused views) of each slot of a repacked linear, from its column map.
fn part_of_slot(d: &DeviceLinear, widths: &[usize]) -> Vec<usize> {
    d.col_map
        .iter()
        .map(|&c| {
            let mut c = c as usize;
            widths
                .iter()
                .position(|&w| {
                    let inside = c < w;
                    c = c.saturating_sub(w);
                    inside
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Original row of sorted row `sorted` for a slot of `part` (identity without act-order).
fn original_row(d: &DeviceLinear, part: usize, sorted: usize) -> usize {
    d.perm.as_ref().map_or(sorted, |p| p[part * d.k_pad + sorted] as usize)
}

/// `x` (K values) in the sorted row order of `part` of a repacked linear: the input its GEMV reads, as the
/// producers write it with act-order.
fn sorted<T: Copy>(d: &DeviceLinear, part: usize, x: &[T]) -> Vec<T> {
    (0..d.k).map(|s| x[original_row(d, part, s)]).collect()
}

/// The scatter indices of an act-order producer writing two parts' copies of `n` values `stride` apart: a random
/// permutation of 0..n per part, `u32::MAX` in the padding between them.
fn two_part_scatter(rng: &mut Rng, n: usize, stride: usize) -> Vec<u32> {
    let mut idx = vec![u32::MAX; 2 * stride];
    for q in 0..2 {
        idx[q * stride..][..n].copy_from_slice(&shuffled(rng, n));
    }
    idx
}

/// A random permutation of 0..n.
fn shuffled(rng: &mut Rng, n: usize) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p
}

/// The GPTQ widths the GEMV and GEMM kernels come in (fp16 tiles: `f16_tiles_match_f64`).
const WIDTHS: [Bits; 2] = [Bits::Four, Bits::Eight];

/// The tile format of GPTQ weights of `bits`.
fn format(bits: Bits) -> TileFormat {
    TileFormat::of_bits(bits)
}

/// The shapes every GPTQ kernel test walks: (K, N, group size, act-order, symmetric).
const SHAPES: &[(usize, usize, Option<usize>, bool, bool)] = &[
    (64, 16, Some(32), false, true),
    (128, 48, Some(64), true, false),
    (200, 24, Some(32), false, false),
    (256, 104, None, false, true),
    (512, 64, Some(128), true, true),
    (1024, 136, Some(128), false, false),
    (4096, 256, Some(128), false, true),
    (4096, 128, Some(128), true, true),
    (11008, 64, Some(128), false, true),
];

// ---------------------------------------------------------------------------------------------------------------
// Layout (no GPU needed)

#[test]
fn repacked_layout_reads_back_the_checkpoint_weights() {
    let mut rng = Rng(7);
    for &(k, n, group, act, sym) in SHAPES.iter().take(6) {
        let lin = RandLinear::new(&mut rng, k, n, group, act, sym);
        let d = lin.repack(ColumnOrder::Identity);
        let perm: Vec<usize> = match &d.perm {
            Some(p) => p.iter().map(|&r| r as usize).collect(),
            None => (0..d.k_pad).collect(),
        };
        for slot in 0..d.n_pad {
            let col = d.col_map[slot];
            if col == PAD_SLOT {
                continue;
            }
            for (sorted, &row) in perm.iter().enumerate().take(k) {
                let want = lin.w(row, col as usize);
                let got = layout::dequant_device(&d, slot, sorted) as f64;
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "K={k} N={n} slot {slot} row {sorted}");
            }
        }
    }
}

/// 8-bit GPTQ (AutoGPTQ's packing: `qweight` [K/4, N], byte j of a word is row 4r + j; `qzeros` [groups, N/4] with
/// stored zero = real − 1), with and without act-order, sym and asym, fused parts: the tiles read back every weight
/// through `dequant_device`, and the byte order within a chunk is the one `pack_chunk_int8` documents.
#[test]
fn int8_layout_reads_back_the_checkpoint_weights() {
    let mut rng = Rng(9);
    let chunk: [u32; 32] = std::array::from_fn(|i| (i as u32 * 7 + 3) & 0xFF);
    let words = layout::pack_chunk_int8(&chunk);
    assert_eq!(words[0], chunk[0] | chunk[4] << 8 | chunk[1] << 16 | chunk[5] << 24);
    assert_eq!(words[1], chunk[2] | chunk[6] << 8 | chunk[3] << 16 | chunk[7] << 24);
    assert!((0..32).all(|i| layout::chunk_int8_value(&words, i) == chunk[i]));
    // (K, N per part, group size, act-order, symmetric)
    for &(k, n, group, act, sym) in &[
        (64usize, 16usize, 32usize, false, true),
        (192, 20, 64, true, false),
        (320, 8, 320, false, false),
        (200, 12, 200, false, true),
    ] {
        let groups = k.div_ceil(group);
        // (qweight, qzeros, scales, g_idx) of each part.
        type Tensors = (Vec<u32>, Vec<u32>, Vec<f16>, Vec<u32>);
        let parts: Vec<Tensors> = (0..2)
            .map(|_| {
                let mut g_idx: Vec<u32> = (0..k).map(|r| (r / group) as u32).collect();
                if act {
                    let perm = shuffled(&mut rng, k);
                    for (i, &p) in perm.iter().enumerate() {
                        g_idx[p as usize] = (i / group) as u32;
                    }
                }
                let qweight = (0..k / 4 * n).map(|_| rng.next() as u32).collect();
                let zero = |rng: &mut Rng| if sym { 127 } else { rng.below(256) as u32 };
                let qzeros =
                    (0..groups * n / 4).map(|_| (0..4).fold(0u32, |w, b| w | zero(&mut rng) << (8 * b))).collect();
                (qweight, qzeros, rng.vec_f16(groups * n, 0.002, 0.02), g_idx)
            })
            .collect();
        let views: Vec<GptqParts> = parts
            .iter()
            .map(|(qw, qz, sc, gi)| GptqParts { qweight: qw, qzeros: qz, scales: sc, g_idx: gi, n, bits: Bits::Eight })
            .collect();
        let order = if act { ColumnOrder::GateUpSplit { inter: n } } else { ColumnOrder::GateUp { inter: n } };
        let d = layout::repack_parts(&views, k, group, groups, order, "gate_up").unwrap();
        assert_eq!(d.qw.len(), d.n_pad * d.k_pad / 4, "two 16-byte words per lane and step");
        let slot_parts = part_of_slot(&d, &[n, n]);
        for (slot, (&col, &part)) in d.col_map.iter().zip(&slot_parts).enumerate() {
            if col == PAD_SLOT {
                continue;
            }
            let (c, v) = (col as usize % n, &views[col as usize / n]);
            for sorted in 0..k {
                let row = original_row(&d, part, sorted);
                let g = v.g_idx[row] as usize;
                let q = Bits::Eight.q_at(v.qweight, n, row, c) as f64;
                let z = Bits::Eight.zero_at(v.qzeros, n, g, c) as f64;
                let want = v.scales[g * n + c].to_f64() * (q - z);
                let got = layout::dequant_device(&d, slot, sorted) as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "K={k} slot {slot} row {sorted}: {got} vs {want}"
                );
            }
        }
    }
}

/// AutoGPTQ's act-order: every fused part with its own permutation. The split gate/up layout and q/k/v (whose
/// parts start tiles) read back every part's weights through that part's row order; the paired gate/up layout,
/// whose tiles mix the parts, is refused.
#[test]
fn fused_parts_with_their_own_act_order_permutations_read_back() {
    let mut rng = Rng(8);
    for (k, n, group) in [(128usize, 20usize, 32usize), (256, 48, 64)] {
        let (a, b) = (
            RandLinear::new(&mut rng, k, n, Some(group), true, true),
            RandLinear::new(&mut rng, k, n, Some(group), true, false),
        );
        assert_ne!(a.g_idx, b.g_idx);
        let groups = k / group;
        let paired = ColumnOrder::GateUp { inter: n };
        let err = layout::repack_parts(&[a.parts(), b.parts()], k, group, groups, paired, "gate_up")
            .expect_err("different permutations cannot share tiles");
        let msg = err.to_string();
        assert!(msg.contains("gate_up") && msg.contains("permutation") && msg.contains("--backend cpu"), "{msg}");

        let split = ColumnOrder::GateUpSplit { inter: n };
        let d = layout::repack_parts(&[a.parts(), b.parts()], k, group, groups, split, "gate_up").unwrap();
        assert_eq!(d.part_slots, [n.next_multiple_of(TILE_N) as u32, layout::NO_PART]);
        let parts = part_of_slot(&d, &[n, n]);
        for (slot, (&col, &part)) in d.col_map.iter().zip(&parts).enumerate() {
            if col == PAD_SLOT {
                continue;
            }
            let (lin, c) = if (col as usize) < n { (&a, col as usize) } else { (&b, col as usize - n) };
            assert_eq!(part, usize::from(std::ptr::eq(lin, &b)), "slot {slot}");
            for sorted in 0..k {
                let want = lin.w(original_row(&d, part, sorted), c);
                let got = layout::dequant_device(&d, slot, sorted) as f64;
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "K={k} slot {slot} row {sorted}");
            }
        }
    }
    // q/k/v as LLaMA names them: three linears, three permutations, each part on tiles of its own.
    let (hd, q_dim, kv_dim, k) = (8usize, 24usize, 8usize, 128usize);
    let (q, kk, v) = (
        RandLinear::new(&mut rng, k, q_dim, Some(32), true, true),
        RandLinear::new(&mut rng, k, kv_dim, Some(32), true, true),
        RandLinear::new(&mut rng, k, kv_dim, Some(32), true, true),
    );
    let order = ColumnOrder::QkvRope { head_dim: hd, q_dim, kv_dim };
    let d = layout::repack_parts(&[q.parts(), kk.parts(), v.parts()], k, 32, 4, order, "qkv").unwrap();
    assert_eq!(d.n_pad, plan_slots_qkv(3, 1, hd));
    let parts = part_of_slot(&d, &[q_dim, kv_dim, kv_dim]);
    for (slot, &col) in d.col_map.iter().enumerate() {
        if col == PAD_SLOT {
            continue;
        }
        let part = parts[slot];
        assert_eq!(part, (slot >= d.part_slots[0] as usize) as usize + (slot >= d.part_slots[1] as usize) as usize);
        let (lin, c) = match part {
            0 => (&q, col as usize),
            1 => (&kk, col as usize - q_dim),
            _ => (&v, col as usize - q_dim - kv_dim),
        };
        for sorted in 0..k {
            let want = lin.w(original_row(&d, part, sorted), c);
            let got = layout::dequant_device(&d, slot, sorted) as f64;
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1e-3), "qkv slot {slot} row {sorted}");
        }
    }
}

/// The plan's slot count of q/k/v for `heads` query heads, `kv_heads` key/value heads of `hd`.
fn plan_slots_qkv(heads: usize, kv_heads: usize, hd: usize) -> usize {
    let (q_pairs, k_pairs) = (heads * hd / 2, kv_heads * hd / 2);
    TILE_N * (q_pairs.div_ceil(TILE_N / 2) + k_pairs.div_ceil(TILE_N / 2) + (kv_heads * hd).div_ceil(TILE_N))
}

// ---------------------------------------------------------------------------------------------------------------
// Device repack

/// The device repack (`repack.cu`) of int4 linears without act-order against the host repack, word for word, with
/// poisoned outputs (the scales-only copy too): one part over every such shape of the GEMV tests, q/k/v from three
/// parts (GQA), gate/up from two.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn repack_int4_on_the_device_matches_the_host() {
    let g = gpu();
    let mut rng = Rng(41);
    let mut cases: Vec<(String, Vec<RandLinear>, ColumnOrder)> = SHAPES
        .iter()
        .filter(|s| !s.3)
        .map(|&(k, n, group, _, sym)| {
            (
                format!("K={k} N={n} G={group:?}"),
                vec![RandLinear::new(&mut rng, k, n, group, false, sym)],
                ColumnOrder::Identity,
            )
        })
        .collect();
    let (hidden, hd, q_dim, kv_dim) = (256, 64, 256, 128);
    let qkv = [q_dim, kv_dim, kv_dim].map(|n| RandLinear::new(&mut rng, hidden, n, Some(64), false, false));
    cases.push(("q/k/v parts".into(), qkv.into(), ColumnOrder::QkvRope { head_dim: hd, q_dim, kv_dim }));
    let inter = 344;
    let gate_up = [inter, inter].map(|n| RandLinear::new(&mut rng, hidden, n, Some(128), false, true));
    cases.push(("gate/up parts".into(), gate_up.into(), ColumnOrder::GateUp { inter }));

    for (what, lins, order) in &cases {
        let l0 = &lins[0];
        let views: Vec<GptqParts> = lins.iter().map(|l| l.parts()).collect();
        let d = layout::repack_parts(&views, l0.k, l0.group_size, l0.groups, *order, "test").unwrap();
        let mem: Vec<[DeviceBuffer; 3]> =
            lins.iter().map(|l| [put(&g, &l.qweight), put(&g, &l.qzeros), put(&g, &l.scales)]).collect();
        let (cm, qw, sz) = (put(&g, &d.col_map), poisoned(&g, d.qw.len() * 4), poisoned(&g, d.sz.len() * 4));
        let scales = poisoned(&g, d.sz.len() * 2);
        let part = |i: usize| {
            mem.get(i).map_or((DevPtr::NULL, DevPtr::NULL, DevPtr::NULL), |m| (m[0].ptr(), m[1].ptr(), m[2].ptr()))
        };
        let width = |i: usize| lins.get(i).map_or(0, |l| l.n as u32);
        let ((qw0, qz0, sc0), (qw1, qz1, sc1), (qw2, qz2, sc2)) = (part(0), part(1), part(2));
        let p = RepackParams {
            qweight0: qw0,
            qweight1: qw1,
            qweight2: qw2,
            qzeros0: qz0,
            qzeros1: qz1,
            qzeros2: qz2,
            scales0: sc0,
            scales1: sc1,
            scales2: sc2,
            col_map: cm.ptr(),
            qw: qw.ptr(),
            sz: sz.ptr(),
            scales: scales.ptr(),
            n0: width(0),
            n1: width(1),
            n2: width(2),
            k: d.k as u32,
            steps: d.steps() as u32,
            tiles: d.tiles() as u32,
            groups: d.groups as u32,
        };
        let grid = Launch::new(4 * g.limits.sm_count, 256, 0);
        launch(&g, &g.k.repack_int4_words, grid, &p);
        launch(&g, &g.k.repack_int4_scales, grid, &p);
        g.sync().unwrap();
        assert!(get::<u32>(&g, &qw, d.qw.len()) == d.qw, "device repack {what}: the words differ from the host's");
        assert!(get::<u32>(&g, &sz, d.sz.len()) == d.sz, "device repack {what}: the scales differ from the host's");
        let want: Vec<u16> = layout::scales_only(&d.sz).iter().map(|h| h.to_bits()).collect();
        assert!(get::<u16>(&g, &scales, d.sz.len()) == want, "device repack {what}: the scales-only copy differs");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GEMV

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemv_store_matches_f64_in_both_widths() {
    let g = gpu();
    // The lean K loop must give the register-pipelined kernels' outputs bit for bit (same loads, same order).
    let mut registers: std::collections::HashMap<String, Vec<u32>> = Default::default();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(11);
        for (bits, &(k, n, group, act, sym)) in WIDTHS.iter().flat_map(|&b| SHAPES.iter().map(move |s| (b, s))) {
            for tpb in [1u32, 3] {
                let lin = RandLinear::of_width(&mut rng, bits, k, n, group, act, sym);
                let dl = upload_linear(&g, lin.repack(ColumnOrder::Identity));
                let x = rng.vec_f16(k, -1.0, 1.0);
                let xm = put(&g, &sorted(&dl.d, 0, &x));
                let y = poisoned(&g, n * 4);
                let p = GemvParams { x16: xm.ptr(), y: y.ptr(), tiles_per_block: tpb, ..dl.p };
                gemv(&g, s, gk.store.of(format(bits)), &dl, &p);
                let got: Vec<f32> = get(&g, &y, n);
                let want = lin.apply(&x.iter().map(|v| v.to_f64()).collect::<Vec<_>>());
                let what = format!("gemv store {bits:?} K={k} N={n} G={group:?} act={act} sym={sym} tpb={tpb}");
                let bits_of: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                // A symmetric int4 linear: the scales-only kernel of the stream gives the same bits.
                if let Some(f) = gk.store.scales_only().filter(|_| sym && bits == Bits::Four) {
                    let y = poisoned(&g, n * 4);
                    gemv(&g, s, f, &dl, &GemvParams { y: y.ptr(), scales: dl.scales, ..p });
                    let got: Vec<u32> = get::<f32>(&g, &y, n).iter().map(|v| v.to_bits()).collect();
                    assert!(got == bits_of, "{what} ({s:?}): the scales-only kernel differs in bits");
                }
                match s {
                    GemvStream::Registers => drop(registers.insert(what.clone(), bits_of)),
                    GemvStream::Lean => assert!(registers[&what] == bits_of, "{what}: lean K loop differs in bits"),
                    GemvStream::Ring => {}
                }
                let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
                check(&got, &want, 2e-3, &format!("{what} ({s:?})"));
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemv_norm_and_residual_match_f64_in_both_widths() {
    let g = gpu();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(12);
        for (bits, &(k, n, group, act, sym)) in WIDTHS.iter().flat_map(|&b| SHAPES.iter().map(move |s| (b, s))) {
            let lin = RandLinear::of_width(&mut rng, bits, k, n, group, act, sym);
            let dl = upload_linear(&g, lin.repack(ColumnOrder::Identity));
            // Fused RMSNorm prologue, the sum of squares given as three partials.
            let x = rng.vec_f32(k, -3.0, 3.0);
            let w = rng.vec_f16(k, 0.5, 1.5);
            let ss: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            let parts = [ss * 0.25, ss * 0.5, ss * 0.25].map(|v| v as f32);
            // Its input is the half input (x · w / 16 in fp16, as the residual epilogue writes it).
            let inv = 1.0 / (ss / k as f64 + 1e-6).sqrt();
            let xn: Vec<f64> = x.iter().zip(&w).map(|(&a, b)| a as f64 * inv * b.to_f64()).collect();
            let half = half_inputs(&x, &w);
            let (hm, sm) = (put(&g, &sorted(&dl.d, 0, &half)), put(&g, &parts));
            let y = poisoned(&g, n * 4);
            let p = GemvParams { x16: hm.ptr(), ssq: sm.ptr(), n_ssq: 3, y: y.ptr(), ..dl.p };
            gemv(&g, s, gk.norm_store.of(format(bits)), &dl, &p);
            let got: Vec<f64> = get::<f32>(&g, &y, n).iter().map(|&v| v as f64).collect();
            check(&got, &lin.apply(&xn), 2e-3, &format!("gemv norm, half input {bits:?} K={k} N={n}"));

            // Residual epilogue: y += x·W, and per-tile sums of squares of the new y; 8 and 16 warps per block; with
            // the next projection's act-order inputs (two parts, a padded stride) scattered behind.
            let kernels = [
                (gk.residual.of(format(bits)), 8u32, false),
                (gk.residual_wide.of(format(bits)), 16, false),
                (gk.residual_sorted.of(format(bits)), 8, true),
                (gk.residual_wide_sorted.of(format(bits)), 16, true),
            ];
            for (f, warps, scatter) in kernels {
                let x16 = rng.vec_f16(k, -1.0, 1.0);
                let y0 = rng.vec_f32(n, -1.0, 1.0);
                let (xm, ym) = (put(&g, &sorted(&dl.d, 0, &x16)), put(&g, &y0));
                let tiles = dl.d.tiles();
                let ssq = poisoned(&g, tiles * 4);
                let stride = n + 8;
                let idx = two_part_scatter(&mut rng, n, stride);
                let next_w = rng.vec_f16(n, 0.5, 1.5);
                let (im, nwm, ys) = (put(&g, &idx), put(&g, &next_w), poisoned(&g, 2 * stride * 4));
                // Without act-order the next norm's half input instead of the copies.
                let half = poisoned(&g, n * 2);
                let p = GemvParams {
                    x16: xm.ptr(),
                    y: ym.ptr(),
                    ssq_out: ssq.ptr(),
                    out16: if scatter { DevPtr::NULL } else { half.ptr() },
                    out_idx: im.ptr(),
                    y_sorted: ys.ptr(),
                    out_norm_w: nwm.ptr(),
                    out_parts: if scatter { 2 } else { 0 },
                    out_stride: stride as u32,
                    ..dl.p
                };
                gemv_warps(&g, s, f, warps, &dl, &p);
                let xw = lin.apply(&x16.iter().map(|v| v.to_f64()).collect::<Vec<_>>());
                let want: Vec<f64> = y0.iter().zip(&xw).map(|(&a, b)| a as f64 + b).collect();
                let got: Vec<f64> = get::<f32>(&g, &ym, n).iter().map(|&v| v as f64).collect();
                check(
                    &got,
                    &want,
                    1e-3,
                    &format!("gemv residual {bits:?} K={k} N={n} warps={warps} scatter={scatter}"),
                );
                let got_ss: Vec<f64> = get::<f32>(&g, &ssq, tiles).iter().map(|&v| v as f64).collect();
                let want_ss: Vec<f64> = (0..tiles)
                    .map(|t| {
                        (0..TILE_N)
                            .map(|j| dl.d.col_map[t * TILE_N + j])
                            .filter(|&c| c != PAD_SLOT)
                            .map(|c| got[c as usize] * got[c as usize])
                            .sum()
                    })
                    .collect();
                check(&got_ss, &want_ss, 1e-5, &format!("gemv residual ssq K={k} N={n} warps={warps}"));
                let all: Vec<f32> = get(&g, &ys, 2 * stride);
                if !scatter {
                    assert!(
                        all.iter().all(|v| v.is_nan()),
                        "gemv residual K={k} N={n} warps={warps} wrote sorted copies"
                    );
                    // The half input of the new residual (as the kernel stored it) times the next norm's weight.
                    let want: Vec<f64> =
                        (0..n).map(|c| half_input(got[c] as f32 * next_w[c].to_f32()).to_f64()).collect();
                    let half = f16s(&get::<u16>(&g, &half, n));
                    check(&half, &want, 1e-3, &format!("gemv residual half input K={k} N={n} warps={warps}"));
                    continue;
                }
                // Each copy holds the new residual (as the kernel stored it) times the next norm's weight.
                let want_copy: Vec<f64> = (0..n).map(|c| got[c] * next_w[c].to_f64()).collect();
                for q in 0..2 {
                    let copy: Vec<f64> =
                        (0..n).map(|c| all[q * stride + idx[q * stride + c] as usize] as f64).collect();
                    check(&copy, &want_copy, 1e-6, &format!("gemv residual sorted copy {q} K={k} N={n} warps={warps}"));
                    assert!(all[q * stride + n..][..8].iter().all(|v| v.is_nan()), "wrote past copy {q}'s columns");
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemv_int4_qkv_rotates_and_appends_to_the_cache() {
    let g = gpu();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(13);
        // (hidden, heads, kv_heads, head_dim, group, act-order)
        for &(hidden, heads, kv_heads, hd, group, act) in &[
            (64usize, 4usize, 4usize, 16usize, Some(32usize), false),
            (256, 4, 2, 64, Some(64), true),
            (512, 4, 4, 128, Some(128), false),
            (4096, 32, 32, 128, Some(128), false),
        ] {
            let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
            let n = q_dim + 2 * kv_dim;
            let lin = RandLinear::new(&mut rng, hidden, n, group, act, true);
            let dl = upload_linear(&g, lin.repack(ColumnOrder::QkvRope { head_dim: hd, q_dim, kv_dim }));
            let (ctx, max_pos) = (64usize, 128usize);
            let out = QkvOut::new(&g, heads, kv_heads, hd, ctx, max_pos, rng.below(ctx as u64) as u32);
            let x = rng.vec_f32(hidden, -2.0, 2.0);
            let w = vec![f16::ONE; hidden];
            let ss: f32 = x.iter().map(|v| v * v).sum();
            let half = half_inputs(&x, &w);
            let (hm, sm) = (put(&g, &sorted(&dl.d, 0, &half)), put(&g, &[ss]));
            let p = GemvParams { x16: hm.ptr(), ssq: sm.ptr(), n_ssq: 1, ..out.params(dl.p) };
            gemv(&g, s, gk.qkv.of(TileFormat::Int4), &dl, &p);
            let inv = 1.0 / (ss as f64 / hidden as f64 + 1e-6).sqrt();
            let xn: Vec<f64> = x.iter().map(|&v| v as f64 * inv).collect();
            out.check(&g, &lin.apply(&xn), &format!("qkv hidden={hidden}"));
        }
    }
}

/// Rotate each `hd`-wide head of `v` to position `pos` in f64 (rotate_half, theta 10000).
fn rope_f64(v: &[f64], hd: usize, pos: u32) -> Vec<f64> {
    let mut out = v.to_vec();
    for (h, head) in v.chunks(hd).enumerate() {
        for i in 0..hd / 2 {
            let a = 10000f64.powf(-(2.0 * i as f64) / hd as f64) * pos as f64;
            out[h * hd + i] = head[i] * a.cos() - head[i + hd / 2] * a.sin();
            out[h * hd + i + hd / 2] = head[i + hd / 2] * a.cos() + head[i] * a.sin();
        }
    }
    out
}

/// The rope tests' setting on the device: the rotary tables for positions below `max_pos`, the chunk's start
/// position `pos0` and the shapes, and the parameter block `rope_kv_rows` (and the short tile's rotary epilogue)
/// take over them.
struct RopeSetup {
    cos: DeviceBuffer,
    sin: DeviceBuffer,
    pos0: DeviceBuffer,
    q_dim: usize,
    kv_dim: usize,
    head_dim: usize,
    ctx: usize,
}

impl RopeSetup {
    fn new(
        g: &Device,
        (heads, kv_heads, head_dim): (usize, usize, usize),
        ctx: usize,
        max_pos: usize,
        pos0: u32,
    ) -> Self {
        let table = RopeTable::new(head_dim, 10000.0, max_pos);
        let (cos, sin) = table.tables();
        RopeSetup {
            cos: put(g, cos),
            sin: put(g, sin),
            pos0: put(g, &[pos0]),
            q_dim: heads * head_dim,
            kv_dim: kv_heads * head_dim,
            head_dim,
            ctx,
        }
    }
    fn params(
        &self,
        qkv: &DeviceBuffer,
        q: &DeviceBuffer,
        k_cache: &DeviceBuffer,
        v_cache: &DeviceBuffer,
    ) -> RopeParams {
        RopeParams {
            qkv: qkv.ptr(),
            q_out: q.ptr(),
            k_cache: k_cache.ptr(),
            v_cache: v_cache.ptr(),
            rope_cos: self.cos.ptr(),
            rope_sin: self.sin.ptr(),
            pos0: self.pos0.ptr(),
            q_dim: self.q_dim as u32,
            kv_dim: self.kv_dim as u32,
            head_dim: self.head_dim as u32,
            ctx: self.ctx as u32,
        }
    }
}

/// What a q/k/v GEMV writes, poisoned: the rotated queries and a position of the KV caches, with the rotary tables
/// and the position it reads.
struct QkvOut {
    _rope: RopeSetup,
    q: DeviceBuffer,
    kc: DeviceBuffer,
    vc: DeviceBuffer,
    dims: (usize, usize, usize, usize),
    pos: u32,
    params: GemvParams,
}

impl QkvOut {
    fn new(g: &Device, heads: usize, kv_heads: usize, hd: usize, ctx: usize, max_pos: usize, pos: u32) -> QkvOut {
        let rope = RopeSetup::new(g, (heads, kv_heads, hd), ctx, max_pos, pos);
        let q = poisoned(g, rope.q_dim * 2);
        let (kc, vc) = (poisoned(g, kv_heads * ctx * hd * 2), poisoned(g, kv_heads * ctx * hd * 2));
        let params = GemvParams {
            out16: q.ptr(),
            k_cache: kc.ptr(),
            v_cache: vc.ptr(),
            rope_cos: rope.cos.ptr(),
            rope_sin: rope.sin.ptr(),
            pos: rope.pos0.ptr(),
            ctx: ctx as u32,
            head_dim: hd as u32,
            q_dim: rope.q_dim as u32,
            kv_dim: rope.kv_dim as u32,
            ..Default::default()
        };
        let dims = (rope.q_dim, kv_heads, hd, ctx);
        QkvOut { _rope: rope, q, kc, vc, dims, pos, params }
    }

    /// `lin`'s parameters with this output's.
    fn params(&self, lin: GemvParams) -> GemvParams {
        GemvParams {
            out16: self.params.out16,
            k_cache: self.params.k_cache,
            v_cache: self.params.v_cache,
            rope_cos: self.params.rope_cos,
            rope_sin: self.params.rope_sin,
            pos: self.params.pos,
            ctx: self.params.ctx,
            head_dim: self.params.head_dim,
            q_dim: self.params.q_dim,
            kv_dim: self.params.kv_dim,
            ..lin
        }
    }

    /// Compare with the f64 projection `y` (q | k | v): q and k rotated, k and v at the position, nothing else in
    /// the caches written.
    fn check(&self, g: &Device, y: &[f64], what: &str) {
        let ((q_dim, kv_heads, hd, ctx), pos) = (self.dims, self.pos as usize);
        let kv_dim = kv_heads * hd;
        check(&f16s(&get::<u16>(g, &self.q, q_dim)), &rope_f64(&y[..q_dim], hd, self.pos), 3e-3, &format!("{what} q"));
        let kall = f16s(&get::<u16>(g, &self.kc, kv_heads * ctx * hd));
        let vall = f16s(&get::<u16>(g, &self.vc, kv_heads * ctx * hd));
        let at = |all: &[f64]| -> Vec<f64> {
            (0..kv_heads).flat_map(|h| all[(h * ctx + pos) * hd..][..hd].to_vec()).collect()
        };
        let want_k = rope_f64(&y[q_dim..q_dim + kv_dim], hd, self.pos);
        check(&at(&kall), &want_k, 3e-3, &format!("{what} k"));
        check(&at(&vall), &y[q_dim + kv_dim..], 3e-3, &format!("{what} v"));
        let written = |all: &[f64]| (0..kv_heads * ctx).filter(|&r| r % ctx != pos).any(|r| all[r * hd].is_finite());
        assert!(!written(&kall) && !written(&vall), "{what}: wrote cache positions other than {pos}");
    }
}

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemv_int4_gate_up_applies_swiglu() {
    let g = gpu();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(14);
        for &(hidden, inter, group, act) in
            &[(64usize, 176usize, Some(32usize), false), (256, 344, Some(64), false), (4096, 11008, Some(128), false)]
        {
            // The paired layout (act-order lays gate/up out split: gemv_int4_per_part_act_order_matches_f64).
            let gate = RandLinear::new(&mut rng, hidden, inter, group, act, true);
            let mut up = RandLinear::new(&mut rng, hidden, inter, group, false, true);
            up.g_idx = gate.g_idx.clone();
            let d = layout::repack_parts(
                &[gate.parts(), up.parts()],
                hidden,
                gate.group_size,
                gate.groups,
                ColumnOrder::GateUp { inter },
                "test",
            )
            .unwrap();
            let dl = upload_linear(&g, d);
            let x = rng.vec_f32(hidden, -2.0, 2.0);
            let w = rng.vec_f16(hidden, 0.5, 1.5);
            let ss: f32 = x.iter().map(|v| v * v).sum();
            let half = half_inputs(&x, &w);
            let (hm, sm) = (put(&g, &half), put(&g, &[ss]));
            let h = poisoned(&g, inter * 2);
            let p = GemvParams { x16: hm.ptr(), ssq: sm.ptr(), n_ssq: 1, out16: h.ptr(), ..dl.p };
            gemv(&g, s, gk.gate_up.of(TileFormat::Int4), &dl, &p);
            let inv = 1.0 / (ss as f64 / hidden as f64 + 1e-6).sqrt();
            let xn: Vec<f64> = x.iter().zip(&w).map(|(&a, b)| a as f64 * inv * b.to_f64()).collect();
            let (gv, uv) = (gate.apply(&xn), up.apply(&xn));
            let want: Vec<f64> = gv.iter().zip(&uv).map(|(&a, &b)| a / (1.0 + (-a).exp()) * b).collect();
            check(&f16s(&get::<u16>(&g, &h, inter)), &want, 3e-3, &format!("gate/up hidden={hidden} inter={inter}"));
        }
    }
}

/// AutoGPTQ act-order, where every fused part has its own permutation: q/k/v from three linears (GQA, with blocks
/// of 1 and 3 tiles, so that a block spans parts) through `gemv_int4_qkv_sorted`, and gate/up from two through the split
/// layout's `gemv_int4_gate_up_split` (blocks of 1 and 3 pairs, awkward widths), against float64.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemv_int4_per_part_act_order_matches_f64() {
    let g = gpu();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(15);
        // A residual stream, its norm and its sum of squares; the kernels read it as the producers write it with
        // act-order: a copy per part in that part's row order, norm weight folded in, k_pad apart.
        let norm_input = |rng: &mut Rng, d: &DeviceLinear, parts: usize| {
            let k = d.k;
            let x = rng.vec_f32(k, -2.0, 2.0);
            let w = rng.vec_f16(k, 0.5, 1.5);
            let ss: f32 = x.iter().map(|v| v * v).sum();
            let inv = 1.0 / (ss as f64 / k as f64 + 1e-6).sqrt();
            let xn: Vec<f64> = x.iter().zip(&w).map(|(&a, b)| a as f64 * inv * b.to_f64()).collect();
            let folded: Vec<f32> = x.iter().zip(&w).map(|(&a, b)| a * b.to_f32()).collect();
            let mut copies = vec![f32::NAN; parts * d.k_pad];
            for part in 0..parts {
                copies[part * d.k_pad..][..k].copy_from_slice(&sorted(d, part, &folded));
            }
            (copies, ss, xn)
        };
        // (hidden, heads, kv_heads, head_dim, group)
        for &(hidden, heads, kv_heads, hd, group) in
            &[(256usize, 3usize, 1usize, 16usize, 64usize), (4096, 32, 8, 128, 128)]
        {
            let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
            let lins = [
                RandLinear::new(&mut rng, hidden, q_dim, Some(group), true, true),
                RandLinear::new(&mut rng, hidden, kv_dim, Some(group), true, false),
                RandLinear::new(&mut rng, hidden, kv_dim, Some(group), true, true),
            ];
            let views: Vec<GptqParts> = lins.iter().map(|l| l.parts()).collect();
            let order = ColumnOrder::QkvRope { head_dim: hd, q_dim, kv_dim };
            let d = layout::repack_parts(&views, hidden, group, hidden / group, order, "qkv").unwrap();
            let dl = upload_linear(&g, d);
            for tpb in [1u32, 3] {
                let out = QkvOut::new(&g, heads, kv_heads, hd, 16, 16, 5);
                let (copies, ss, xn) = norm_input(&mut rng, &dl.d, 3);
                let (xm, sm) = (put(&g, &copies), put(&g, &[ss]));
                let p = GemvParams { x: xm.ptr(), ssq: sm.ptr(), n_ssq: 1, tiles_per_block: tpb, ..out.params(dl.p) };
                gemv(&g, s, gk.qkv_sorted.of(TileFormat::Int4), &dl, &p);
                let y: Vec<f64> = lins.iter().flat_map(|l| l.apply(&xn)).collect();
                out.check(&g, &y, &format!("per-part qkv hidden={hidden} tpb={tpb}"));
            }
        }
        for &(hidden, inter, group) in &[(64usize, 20usize, 32usize), (256, 344, 64), (4096, 11008, 128)] {
            let gate = RandLinear::new(&mut rng, hidden, inter, Some(group), true, true);
            let up = RandLinear::new(&mut rng, hidden, inter, Some(group), true, false);
            let order = ColumnOrder::GateUpSplit { inter };
            let d = layout::repack_parts(&[gate.parts(), up.parts()], hidden, group, hidden / group, order, "gate_up")
                .unwrap();
            let dl = upload_linear(&g, d);
            let pairs = dl.d.part_slots[0] / TILE_N as u32;
            for tpb in [1u32, 3] {
                let (copies, ss, xn) = norm_input(&mut rng, &dl.d, 2);
                let (xm, sm) = (put(&g, &copies), put(&g, &[ss]));
                // SwiGLU's output goes where down_proj's sorted input wants it.
                let down_inv = shuffled(&mut rng, inter);
                let (h, im) = (poisoned(&g, inter * 2), put(&g, &down_inv));
                let p = GemvParams {
                    x: xm.ptr(),
                    ssq: sm.ptr(),
                    n_ssq: 1,
                    out16: h.ptr(),
                    out_idx: im.ptr(),
                    tiles_per_block: tpb,
                    ..dl.p
                };
                gemv_units(&g, s, gk.gate_up_split.of(TileFormat::Int4), 8, pairs, &dl, &p);
                let (gv, uv) = (gate.apply(&xn), up.apply(&xn));
                let want: Vec<f64> = gv.iter().zip(&uv).map(|(&a, &b)| a / (1.0 + (-a).exp()) * b).collect();
                let all = f16s(&get::<u16>(&g, &h, inter));
                let got: Vec<f64> = (0..inter).map(|i| all[down_inv[i] as usize]).collect();
                check(&got, &want, 3e-3, &format!("split gate/up hidden={hidden} inter={inter} tpb={tpb}"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_matches_f64_in_both_widths() {
    let g = gpu();
    let mut rng = Rng(21);
    for (bits, &(k, n, group, act, sym)) in WIDTHS.iter().flat_map(|&b| SHAPES.iter().map(move |s| (b, s))) {
        for (m, k_splits) in [(1usize, 1u32), (1, 5), (7, 3), (64, 1), (64, 2), (130, 1)] {
            if k * n * m > 4096 * 256 * 130 / 2 && m > 64 {
                continue; // keep the f64 reference quick
            }
            let lin = RandLinear::of_width(&mut rng, bits, k, n, group, act, sym);
            let d = lin.repack(ColumnOrder::Identity);
            let perm = d.perm.clone();
            let dl = upload_linear(&g, d);
            // A's columns in the sorted row order, as the producers write them.
            let a = rng.vec_f16(m * k, -1.0, 1.0);
            let a_sorted: Vec<f16> = match &perm {
                Some(p) => (0..m).flat_map(|r| (0..k).map(|c| a[r * k + p[c] as usize]).collect::<Vec<_>>()).collect(),
                None => a.clone(),
            };
            let am = put(&g, &a_sorted);
            let y = poisoned(&g, m * n * 4);
            let y0 = rng.vec_f32(m * n, -1.0, 1.0);
            let yr = put(&g, &y0);
            let y16 = poisoned(&g, m * n * 2);
            let part = g.alloc(k_splits as usize * m * dl.d.n_pad * 4, "t").unwrap();
            let counters = put(&g, &vec![0u32; 64]);
            let base =
                GemmParams { part: part.ptr(), counters: counters.ptr(), k_splits, ..dl.gemm(am.ptr(), m, k, n) };
            // Every tile that can take these rows: 64 always, and 128 × 128 (which the host picks from 128 rows on,
            // but which must be right for any row count) where the card runs it.
            // (Chunks of at most 16 rows run gemm_small in the engine: tested below.)
            let mut tiles = vec![GemmTileFns::rows64(&g, bits)];
            if shapes::gemm128_fits(&g.limits) && bits == Bits::Four {
                tiles.push(GemmTileFns::rows128(&g));
            }
            let mut want = Vec::with_capacity(m * n);
            for r in 0..m {
                want.extend(lin.apply(&a[r * k..(r + 1) * k].iter().map(|v| v.to_f64()).collect::<Vec<_>>()));
            }
            for t in &tiles {
                let [f32k, resk, f16k] = t.fns;
                let (bm, threads, smem) = (t.rows, t.threads, t.smem);
                let grid = (dl.p.n_pad.div_ceil(t.slots), (m as u32).div_ceil(bm), k_splits);
                // Fresh poison (and a fresh residual) for every variant, so that none passes on another's output.
                set(&g, &y, &vec![0xFFu8; m * n * 4]);
                set(&g, &y16, &vec![0xFFu8; m * n * 2]);
                set(&g, &yr, &y0);
                launch(&g, f32k, Launch::new(grid, threads, smem), &GemmParams { y32: y.ptr(), ..base });
                launch(&g, resk, Launch::new(grid, threads, smem), &GemmParams { y32: yr.ptr(), ..base });
                launch(&g, f16k, Launch::new(grid, threads, smem), &GemmParams { y16: y16.ptr(), ..base });
                g.sync().unwrap();
                let what = format!(
                    "gemm {bits:?} BM={bm} M={m} K={k} N={n} G={group:?} act={act} sym={sym} splits={k_splits}"
                );
                assert!(get::<u32>(&g, &counters, 64).iter().all(|&c| c == 0), "{what}: split counters not reset");
                let got: Vec<f64> = get::<f32>(&g, &y, m * n).iter().map(|&v| v as f64).collect();
                check(&got, &want, 2e-3, &what);
                let got_r: Vec<f64> = get::<f32>(&g, &yr, m * n).iter().map(|&v| v as f64).collect();
                let want_r: Vec<f64> = want.iter().zip(&y0).map(|(a, &b)| a + b as f64).collect();
                check(&got_r, &want_r, 2e-3, &format!("{what} residual"));
                check(&f16s(&get::<u16>(&g, &y16, m * n)), &want, 3e-3, &format!("{what} f16"));
            }
        }
    }
}

/// One GEMM tile's kernels (f32 store, residual, f16 store), launch shape and input order.
struct GemmTileFns<'a> {
    rows: u32,
    slots: u32,
    threads: u32,
    smem: u32,
    fns: [&'a Kernel<GemmParams>; 3],
    /// The order the tile reads A in (A is rearranged on the device, and checked, before it runs).
    order: InputOrder,
}

/// Input column that column `p` (< 64) of a K step holds after `permute_k_steps`, written from the fragment mapping
/// of `gemm_wgmma_short.cu` (k16 block i = p / 16 holds at column c the input row 16 (c' / 2) + 8h + i + 4 (c' % 2),
/// h = c / 8, c' = c % 8), independently of the kernels' code.
fn k_step_source(p: usize) -> usize {
    let (i, c) = (p / 16, p % 16);
    let (h, cc) = (c / 8, c % 8);
    16 * (cc / 2) + 8 * h + i + 4 * (cc % 2)
}

/// `rows` rows of `cols` halves rearranged on the host into the K order of the weights-in-registers tile: each
/// row `cols` rounded up to 64 wide, column c of a step holding column `k_step_source` of that step, zero past
/// `cols`.
fn in_k_steps(a: &[u16], rows: usize, cols: usize) -> Vec<u16> {
    let k_pad = cols.next_multiple_of(64);
    let mut out = vec![0u16; rows * k_pad];
    for r in 0..rows {
        for c in 0..k_pad {
            let src = 64 * (c / 64) + k_step_source(c % 64);
            if src < cols {
                out[r * k_pad + c] = a[r * cols + src];
            }
        }
    }
    out
}

/// `permute_k_steps` over `parts` copies of `m` rows of A (`lda` wide, `in_stride` apart) into a new buffer of
/// `parts` × m × k_pad halves, checked against the host's rearrangement of what was uploaded: every column of a
/// step from `k_step_source`, zero from k on (the buffer starts poisoned).
fn permuted_k(
    g: &Device,
    a: &DeviceBuffer,
    m: usize,
    lda: usize,
    k: usize,
    parts: usize,
    in_stride: usize,
) -> DeviceBuffer {
    let k_pad = k.next_multiple_of(64);
    let out = poisoned(g, parts * m * k_pad * 2);
    let p = PermuteKParams {
        input: a.ptr(),
        out: out.ptr(),
        lda: lda as u32,
        k: k as u32,
        k_pad: k_pad as u32,
        in_part_stride: in_stride as u32,
    };
    launch(g, &g.k.permute_k_steps, shapes::permute_k(m as u32, parts as u32), &p);
    g.sync().unwrap();
    let input: Vec<u16> = get(g, a, (parts - 1) * in_stride + m * lda);
    let got: Vec<u16> = get(g, &out, parts * m * k_pad);
    for z in 0..parts {
        for r in 0..m {
            for c in 0..k_pad {
                let src = 64 * (c / 64) + k_step_source(c % 64);
                let want = if src < k { input[z * in_stride + r * lda + src] } else { 0 };
                assert_eq!(got[(z * m + r) * k_pad + c], want, "permute_k_steps part {z} row {r} column {c}");
            }
        }
    }
    out
}

/// Where each half of a buffer in the GEMV-shaped tile's fragment order (`ptx/kernels/frag16.cuh`) over `k_pad`
/// columns comes from, as (row, column) of A, for `rows` rows (whole blocks of 16): written from mma.m16n8k16's A
/// fragment and the lane mapping of `gemv_rows.cu`, independently of the kernels' code. Per row block b, 128-column
/// span s, k16 block j and lane (g, t), four words: (A[g][k0], A[g][k0 + 4]), (A[g + 8][k0], ..), (A[g][k0 + 1],
/// A[g][k0 + 5]), (A[g + 8][k0 + 1], ..) of the block's rows, k0 = 128 s + 32 t + 8 (j / 2) + 2 (j % 2).
fn frag16_sources(k_pad: usize, rows: usize) -> Vec<(usize, usize)> {
    assert_eq!(k_pad % 128, 0);
    let mut at = Vec::with_capacity(rows.div_ceil(16) * 16 * k_pad);
    for b in 0..rows.div_ceil(16) {
        for s in 0..k_pad / 128 {
            for j in 0..8 {
                for lane in 0..32 {
                    let (g, t) = (lane / 4, lane % 4);
                    let k0 = 128 * s + 32 * t + 8 * (j / 2) + 2 * (j % 2);
                    for word in 0..4 {
                        for half in 0..2 {
                            at.push((16 * b + g + 8 * (word % 2), k0 + word / 2 + 4 * half));
                        }
                    }
                }
            }
        }
    }
    at
}

/// `permute_frag16` of `m` rows of A (`lda` wide, k columns) into a new buffer of 16 · ceil(m / 16) × k_pad halves
/// (k_pad the next multiple of 128), checked against the host's rearrangement of what was uploaded: each half from
/// `frag16_sources`, zero from k on, and the rows past m never written (the buffer starts poisoned).
fn permuted_frag16(g: &Device, a: &DeviceBuffer, m: usize, lda: usize, k: usize) -> DeviceBuffer {
    let k_pad = k.next_multiple_of(128);
    let len = m.div_ceil(16) * 16 * k_pad;
    let out = poisoned(g, len * 2);
    let p = PermuteKParams {
        input: a.ptr(),
        out: out.ptr(),
        lda: lda as u32,
        k: k as u32,
        k_pad: k_pad as u32,
        in_part_stride: 0,
    };
    launch(g, &g.k.permute_frag16, shapes::permute_k(m as u32, 1), &p);
    g.sync().unwrap();
    let input: Vec<u16> = get(g, a, (m - 1) * lda + k);
    let got: Vec<u16> = get(g, &out, len);
    for (i, &(r, c)) in frag16_sources(k_pad, m).iter().enumerate() {
        let want = if r >= m {
            0xFFFF
        } else if c < k {
            input[r * lda + c]
        } else {
            0
        };
        assert_eq!(got[i], want, "permute_frag16 half {i}: row {r} column {c}");
    }
    out
}

impl<'a> GemmTileFns<'a> {
    fn rows64(g: &'a Device, bits: Bits) -> Self {
        let fns =
            [g.k.gemm_store32.of(format(bits)), g.k.gemm_residual.of(format(bits)), g.k.gemm_store16.of(format(bits))];
        GemmTileFns {
            rows: 64,
            slots: 64,
            threads: 128,
            smem: gemm_smem_bytes(64, format(bits)),
            fns,
            order: InputOrder::Rows,
        }
    }
    fn rows128(g: &'a Device) -> Self {
        let fns = [&g.k.gemm128_store32, &g.k.gemm128_residual, &g.k.gemm128_store16];
        GemmTileFns { rows: 128, slots: 128, threads: 256, smem: GEMM128_SMEM_BYTES, fns, order: InputOrder::Rows }
    }
    fn wgmma128(g: &'a Device) -> Self {
        let fns = [&g.k.gemm_wgmma_store32, &g.k.gemm_wgmma_residual, &g.k.gemm_wgmma_store16];
        GemmTileFns { rows: 128, slots: 128, threads: 256, smem: GEMM_WGMMA_SMEM_BYTES, fns, order: InputOrder::Rows }
    }
    fn wgmma256(g: &'a Device) -> Self {
        let fns = [&g.k.gemm_wgmma256_store32, &g.k.gemm_wgmma256_residual, &g.k.gemm_wgmma256_store16];
        GemmTileFns {
            rows: 128,
            slots: 256,
            threads: 256,
            smem: GEMM_WGMMA256_SMEM_BYTES,
            fns,
            order: InputOrder::Rows,
        }
    }
    fn wgmma_ws(g: &'a Device) -> Self {
        let fns = [&g.k.gemm_wgmma_ws_store32, &g.k.gemm_wgmma_ws_residual, &g.k.gemm_wgmma_ws_store16];
        GemmTileFns {
            rows: 128,
            slots: 128,
            threads: 384,
            smem: GEMM_WGMMA_WS_SMEM_BYTES,
            fns,
            order: InputOrder::Rows,
        }
    }
    fn wgmma_short(g: &'a Device) -> Self {
        let fns = [&g.k.gemm_wgmma_short_store32, &g.k.gemm_wgmma_short_residual, &g.k.gemm_wgmma_short_store16];
        GemmTileFns {
            rows: 16,
            slots: 128,
            threads: 256,
            smem: GEMM_WGMMA_SHORT_SMEM_BYTES,
            fns,
            order: InputOrder::KSteps,
        }
    }
    fn gemv_rows(g: &'a Device, blocks: u32, wide: bool) -> Self {
        let k = &g.k;
        let fns = [
            k.gemv_rows_store32.of(blocks, wide),
            k.gemv_rows_residual.of(blocks, wide),
            k.gemv_rows_store16.of(blocks, wide),
        ];
        let threads = if wide { 512 } else { 256 };
        GemmTileFns { rows: 16 * blocks, slots: 16, threads, smem: 0, fns, order: InputOrder::Frag16 }
    }
    fn wgmma_wreg(g: &'a Device) -> Self {
        let fns = [&g.k.gemm_wgmma_wreg_store32, &g.k.gemm_wgmma_wreg_residual, &g.k.gemm_wgmma_wreg_store16];
        GemmTileFns {
            rows: 128,
            slots: 128,
            threads: 256,
            smem: GEMM_WGMMA_WREG_SMEM_BYTES,
            fns,
            order: InputOrder::KSteps,
        }
    }
}

impl RandLinear {
    /// The dense W[k][n] (original row order), for references over many rows.
    fn dense(&self) -> Vec<f64> {
        let mut w = vec![0f64; self.k * self.n];
        for k in 0..self.k {
            for n in 0..self.n {
                w[k * self.n + n] = self.w(k, n);
            }
        }
        w
    }
}

/// Y = A · W in f64: A row-major m × k, W row-major k × n.
fn matmul_f64(a: &[f64], w: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut y = vec![0f64; m * n];
    for (yr, ar) in y.chunks_mut(n).zip(a.chunks(k)).take(m) {
        for (&av, wr) in ar.iter().zip(w.chunks(n)) {
            for (yv, &wv) in yr.iter_mut().zip(wr) {
                *yv += av * wv;
            }
        }
    }
    y
}

/// `m` random rows of A for a gate/up linear `dl` of two act-order parts: on the device as two copies `stride`
/// elements apart, each in its part's row order (NaN between them), and the float64 result [m][gate ‖ up].
fn per_part_case(
    g: &Device,
    rng: &mut Rng,
    dl: &DevLin,
    [gate, up]: [&RandLinear; 2],
    m: usize,
    stride: usize,
) -> (DeviceBuffer, Vec<f64>) {
    let (k, n) = (gate.k, gate.n);
    let a = rng.vec_f16(m * k, -1.0, 1.0);
    let mut a_dev = vec![f16::NAN; 2 * stride];
    for part in 0..2 {
        for r in 0..m {
            a_dev[part * stride + r * k..][..k].copy_from_slice(&sorted(&dl.d, part, &a[r * k..(r + 1) * k]));
        }
    }
    let a64: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
    let (wg, wu) = (matmul_f64(&a64, &gate.dense(), m, k, n), matmul_f64(&a64, &up.dense(), m, k, n));
    let want = (0..m).flat_map(|r| wg[r * n..][..n].iter().chain(&wu[r * n..][..n]).copied()).collect();
    (put(g, &a_dev), want)
}

/// Act-order with a permutation per fused part in one launch of the 64- and 128-row tiles: gate/up of two linears
/// (split layout, parts on 128-slot boundaries), each block reading the copy of A in its part's row order.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_int4_per_part_act_order_matches_f64() {
    let g = gpu();
    let mut rng = Rng(22);
    let (k, n, group) = (320usize, 128usize, 64usize);
    let (gate, up) = (
        RandLinear::new(&mut rng, k, n, Some(group), true, true),
        RandLinear::new(&mut rng, k, n, Some(group), true, false),
    );
    let order = ColumnOrder::GateUpSplit { inter: n };
    let d = layout::repack_parts(&[gate.parts(), up.parts()], k, group, k / group, order, "gate_up").unwrap();
    assert_eq!(d.part_slots, [n as u32, layout::NO_PART]);
    let dl = upload_linear(&g, d);
    let mut tiles = vec![GemmTileFns::rows64(&g, Bits::Four)];
    if shapes::gemm128_fits(&g.limits) {
        tiles.push(GemmTileFns::rows128(&g));
    }
    if g.has_wgmma() {
        tiles.push(GemmTileFns::wgmma_wreg(&g));
    }
    for (m, k_splits) in [(64usize, 1u32), (130, 2), (256, 1)] {
        // Two copies of A, each in its part's row order, a chunk of 300 rows apart (as the norm writes them).
        let stride = 300 * k;
        let (am, want) = per_part_case(&g, &mut rng, &dl, [&gate, &up], m, stride);
        let y = poisoned(&g, m * 2 * n * 4);
        let part = g.alloc(k_splits as usize * m * dl.d.n_pad * 4, "t").unwrap();
        let counters = put(&g, &vec![0u32; 64]);
        for t in &tiles {
            set(&g, &y, &vec![0xFFu8; m * 2 * n * 4]);
            let k_pad = dl.p.k_pad as usize;
            let ap = (t.order == InputOrder::KSteps).then(|| permuted_k(&g, &am, m, k, k, 2, stride));
            let (a, lda, a_stride) = ap.as_ref().map_or((am.ptr(), k, stride), |ap| (ap.ptr(), k_pad, m * k_pad));
            let p = GemmParams {
                y32: y.ptr(),
                part: part.ptr(),
                counters: counters.ptr(),
                k_splits,
                a_part_stride: a_stride as u32,
                part_slot1: n as u32,
                part_slot2: layout::NO_PART,
                ..dl.gemm(a, m, lda, 2 * n)
            };
            let grid = (dl.p.n_pad.div_ceil(t.slots), (m as u32).div_ceil(t.rows), k_splits);
            launch(&g, t.fns[0], Launch::new(grid, t.threads, t.smem), &p);
            g.sync().unwrap();
            let got: Vec<f64> = get::<f32>(&g, &y, m * 2 * n).iter().map(|&v| v as f64).collect();
            check(&got, &want, 2e-3, &format!("per-part gemm BM={} M={m} splits={k_splits}", t.rows));
        }
    }
    // Chunks of at most 16 rows: gemm_small stages the copy of its block's part (blocks of 1, 2, 4 and 8 tiles: the
    // parts start at tile 8), split-K included; the engine uses one launch where the parts align like this.
    let (tiles, steps) = (dl.d.tiles() as u32, dl.d.steps() as u32);
    for (m, tiles_per_block, splits) in [(1usize, 1u32, 1u32), (5, 2, 3), (16, 4, 1), (9, 8, 2)] {
        let shape = GemmTile::Small { tiles_per_block, splits };
        assert_eq!(n as u32 % shape.block_slots(dl.p.n_pad), 0, "the parts start on a block boundary");
        let stride = 20 * k;
        let (am, want) = per_part_case(&g, &mut rng, &dl, [&gate, &up], m, stride);
        let y16 = poisoned(&g, m * 2 * n * 2);
        let part = g.alloc(splits as usize * 16 * dl.d.n_pad * 4, "t").unwrap();
        let counters = put(&g, &vec![0u32; tiles as usize]);
        let p = GemmParams {
            y16: y16.ptr(),
            part: part.ptr(),
            counters: counters.ptr(),
            k_splits: splits,
            a_part_stride: stride as u32,
            part_slot1: n as u32,
            part_slot2: layout::NO_PART,
            ..dl.gemm(am.ptr(), m, k, 2 * n)
        };
        assert!(gemm_small_per_split(steps, splits) <= GEMM_SMALL_MAX_STEPS_PER_SPLIT);
        let l = shape.launch(dl.p.n_pad, dl.p.k_pad, m as u32, splits, TileFormat::Int4);
        launch(&g, g.k.gemm_small_store16.of(TileFormat::Int4), l, &p);
        g.sync().unwrap();
        let what = format!("per-part gemm_small M={m} {shape:?}");
        check(&f16s(&get::<u16>(&g, &y16, m * 2 * n)), &want, 3e-3, &what);
        assert!(get::<u32>(&g, &counters, tiles as usize).iter().all(|&c| c == 0), "{what}: counters not reset");
    }
}

/// The 128 × 128 tile on chunks of the sizes it is chosen for, with awkward shapes: N not a multiple of 128 (a
/// partial last block of slot-tiles), rows not a multiple of 128, K of 5 steps, of 172 and of 200 (zero-filled
/// columns in the last step), group sizes 32 / 64 / 128 and one group, act-order, asymmetric zeros, split-K
/// (including more splits than the host would pick), padded row strides for A and Y (an odd Y stride forces the
/// epilogue's one-element path; the padding must stay poisoned), all three epilogues, and the same bits from two
/// runs.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm128_int4_matches_f64_on_long_chunks() {
    let g = gpu();
    if !shapes::gemm128_fits(&g.limits) {
        assert!(!matches!(g.cc, (8, 0) | (9, 0)), "{}: sm_80 and sm_90 must run the 128 × 128 tile", g.describe());
        eprintln!("skipped: {} grants too little shared memory per block for the 128 × 128 tile", g.describe());
        return;
    }
    gemm_tile_cases(&g, &GemmTileFns::rows128(&g), "gemm128", LONG_CASES);
}

/// The same cases on the wgmma tiles (sm_90 only): 128 and 256 slots.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_wgmma_int4_matches_f64_on_long_chunks() {
    let g = gpu();
    if !g.has_wgmma() {
        eprintln!("skipped: {} has no wgmma (sm_90 only)", g.describe());
        return;
    }
    gemm_tile_cases(&g, &GemmTileFns::wgmma128(&g), "gemm_wgmma", LONG_CASES);
    gemm_tile_cases(&g, &GemmTileFns::wgmma256(&g), "gemm_wgmma256", LONG_CASES);
}

/// The weights-in-registers wgmma tile (`gemm_wgmma_wreg_int4_*`, sm_90 only) on the same cases, each A first
/// rearranged by `permute_k_steps` (itself checked against the host's rearrangement in every case: K of 200
/// leaves zero-filled columns in its last step).
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_wgmma_wreg_int4_matches_f64_on_long_chunks() {
    let g = gpu();
    if !g.has_wgmma() {
        eprintln!("skipped: {} has no wgmma (sm_90 only)", g.describe());
        return;
    }
    gemm_tile_cases(&g, &GemmTileFns::wgmma_wreg(&g), "gemm_wgmma_wreg", LONG_CASES);
}

/// The short wgmma tile (`gemm_wgmma_short_int4_*`: at most 16 rows, the weights dequantized in registers as wgmma's
/// M side; sm_90 only) on the same kinds of awkward shapes at 1 to 16 rows, each A first rearranged into the tile's
/// K order by `permute_k_steps` (checked against the host's rearrangement): rows past m copy row m - 1 and must
/// never be stored; K of one step with an empty split, of 200 (zero-filled columns), of 172 steps in up to 12
/// splits.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_wgmma_short_int4_matches_f64() {
    let g = gpu();
    if !g.has_wgmma() {
        eprintln!("skipped: {} has no wgmma (sm_90 only)", g.describe());
        return;
    }
    #[rustfmt::skip]
    let cases: &[TileCase] = &[
        (1, 4096, 16 * 37, Some(128), false, false, &[1, 3], 0, 0),
        (16, 320, 16 * 37, Some(32), true, false, &[1, 2], 8, 1),
        (9, 320, 16 * 37, None, false, false, &[1], 0, 2),
        (16, 11008, 16 * 9, Some(128), false, false, &[1, 4, 12], 0, 0),
        (3, 4096, 16 * 21, None, false, true, &[1], 16, 0),
        (16, 200, 16 * 21, Some(32), false, false, &[3], 0, 3),
        (8, 320, 16 * 69, Some(64), true, true, &[1], 0, 0),
        (16, 64, 256, Some(32), false, false, &[2], 0, 0),
    ];
    gemm_tile_cases(&g, &GemmTileFns::wgmma_short(&g), "gemm_wgmma_short", cases);
}

/// The tiles the engine runs chunks of `m` ≤ 64 rows on with their own epilogues: the wgmma short tile (sm_90 only,
/// at most 16 rows) in split-K, A in the K order; the GEMV-shaped tile with the row blocks `m` needs (both widths
/// for one block), one split, A as fragments.
fn short_tiles(g: &Device, m: usize) -> Vec<(GemmTile, &'static [u32])> {
    let blocks = m.div_ceil(16) as u32;
    let mut tiles = vec![(GemmTile::GemvRows { blocks, wide: false }, &[1u32][..])];
    if blocks == 1 {
        tiles.push((GemmTile::GemvRows { blocks, wide: true }, &[1]));
    }
    if m <= 16 && g.has_wgmma() {
        tiles.push((GemmTile::WgmmaShort, &[1, 2, 3, 4]));
    } else {
        eprintln!("{} has no wgmma (sm_90 only): the GEMV-shaped tile alone", g.describe());
    }
    tiles
}

/// `m` rows of A (`k` wide, in order) on the device as `tile` reads them: in the K order (`permute_k_steps`) or
/// as fragments (`permute_frag16`), each checked against the host's rearrangement.
fn a_for(g: &Device, tile: GemmTile, a: &[f16], m: usize, k: usize) -> DeviceBuffer {
    let am = put(g, a);
    match tile.input_order() {
        InputOrder::Rows => am,
        InputOrder::KSteps => permuted_k(g, &am, m, k, k, 1, 0),
        InputOrder::Frag16 => permuted_frag16(g, &am, m, k, k),
    }
}

/// The 16- to 64-row tiles' SwiGLU epilogues (`gemm_wgmma_short_int4_swiglu`, `gemv_rows*_int4_swiglu`): a paired
/// gate/up (gate column i in slot j, up column i in slot j + 8 of a tile) of random weights, silu(gate) · up written
/// straight into the down projection's input in the order the down projection's tile reads (the K order, inter a
/// multiple of 64; the fragment order, inter a multiple of 128), against float64; 1–16 rows, split-K included where
/// the tile has it, the same bits from two runs, every output column written and nothing else.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_short_swiglu_matches_f64() {
    let g = gpu();
    let mut rng = Rng(31);
    for &(m, k, inter, group, splits) in &[
        (1usize, 320usize, 192usize, 64usize, 1u32),
        (16, 4096, 256, 128, 3),
        (9, 256, 128, 32, 2),
        (5, 384, 384, 128, 1),
        (37, 384, 256, 64, 1),
        (64, 256, 128, 128, 1),
    ] {
        let (gate, up) = (
            RandLinear::new(&mut rng, k, inter, Some(group), false, true),
            RandLinear::new(&mut rng, k, inter, Some(group), false, false),
        );
        let order = ColumnOrder::GateUp { inter };
        let d = layout::repack_parts(&[gate.parts(), up.parts()], k, group, k / group, order, "gate_up").unwrap();
        let dl = upload_linear(&g, d);
        let a = rng.vec_f16(m * k, -1.0, 1.0);
        let a64: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
        let (yg, yu) = (matmul_f64(&a64, &gate.dense(), m, k, inter), matmul_f64(&a64, &up.dense(), m, k, inter));
        let h = |r: usize, c: usize| {
            let src = r * inter + c;
            yg[src] / (1.0 + (-yg[src]).exp()) * yu[src]
        };
        for (tile, tile_splits) in short_tiles(&g, m) {
            let frag = tile.input_order() == InputOrder::Frag16;
            if frag && (k % 128 != 0 || inter % 128 != 0) {
                continue;
            }
            let splits = if tile_splits.contains(&splits) { splits } else { 1 };
            let am = a_for(&g, tile, &a, m, k);
            // Output half i holds H[r][c] (NaN: never written): column c of a row of the K order holds natural
            // column 64 (c / 64) + k_step_source(c % 64); the fragment order is 16 rows whatever m.
            let want: Vec<f64> = if frag {
                frag16_sources(inter, m).iter().map(|&(r, c)| if r < m { h(r, c) } else { f64::NAN }).collect()
            } else {
                (0..m * inter).map(|i| h(i / inter, 64 * (i % inter / 64) + k_step_source(i % 64))).collect()
            };
            let part = g.alloc(splits as usize * m * dl.d.n_pad * 4, "t").unwrap();
            let counters = put(&g, &vec![0u32; 64]);
            let kernel = match tile {
                GemmTile::GemvRows { blocks, wide } => g.k.gemv_rows_swiglu.of(blocks, wide),
                _ => &g.k.gemm_wgmma_short_swiglu,
            };
            let mut runs = Vec::new();
            for _ in 0..2 {
                let y = poisoned(&g, want.len() * 2);
                let p = GemmParams {
                    y16: y.ptr(),
                    part: part.ptr(),
                    counters: counters.ptr(),
                    k_splits: splits,
                    ..dl.gemm(am.ptr(), m, dl.p.k_pad as usize, inter)
                };
                launch(&g, kernel, tile.launch(dl.p.n_pad, dl.p.k_pad, m as u32, splits, TileFormat::Int4), &p);
                g.sync().unwrap();
                runs.push(get::<u16>(&g, &y, want.len()));
            }
            let what = format!("{tile:?} swiglu M={m} K={k} inter={inter} G={group} splits={splits}");
            assert_eq!(runs[0], runs[1], "{what}: two runs differ");
            for (i, (&b, w)) in runs[0].iter().zip(&want).enumerate() {
                assert_eq!(b == 0xFFFF, w.is_nan(), "{what}: half {i} written {}, expected {w}", b != 0xFFFF);
            }
            let keep =
                |v: &[f64]| v.iter().zip(&want).filter(|(_, w)| !w.is_nan()).map(|(x, _)| *x).collect::<Vec<_>>();
            check(&keep(&f16s(&runs[0])), &keep(&want), 3e-3, &what);
            assert!(get::<u32>(&g, &counters, 64).iter().all(|&c| c == 0), "{what}: counters not reset");
        }
    }
}

/// The 16- to 64-row tiles' q/k/v epilogues (`gemm_wgmma_short_int4_qkv_rope`, `gemv_rows*_int4_qkv_rope`: rotary
/// embedding and KV-cache append, what `rope_kv_rows` does after a plain GEMM) against float64 — every row's rotated
/// q, its k and v at position pos0 + row of the caches and nothing else written there — and bit for bit against that
/// tile's plain GEMM and `rope_kv_rows` on the same input, with split-K where the tile has it, the GQA and MHA
/// shapes, two runs bit-identical.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_short_qkv_rope_matches_f64_and_the_unfused_pass() {
    let g = gpu();
    let mut rng = Rng(37);
    for &(m, hidden, heads, kv_heads, hd, group, splits) in &[
        (16usize, 4096usize, 32usize, 32usize, 128usize, 128usize, 4u32),
        (9, 320, 4, 2, 64, 64, 2),
        (1, 256, 2, 1, 16, 32, 1),
        (5, 512, 8, 2, 32, 128, 3),
        (29, 512, 8, 2, 32, 64, 1),
        (50, 256, 2, 1, 64, 128, 1),
    ] {
        for (tile, tile_splits) in short_tiles(&g, m) {
            short_qkv_rope_case(&g, &mut rng, tile, tile_splits, (m, hidden, heads, kv_heads, hd, group, splits));
        }
    }
}

type QkvCase = (usize, usize, usize, usize, usize, usize, u32);

fn short_qkv_rope_case(g: &Device, rng: &mut Rng, tile: GemmTile, tile_splits: &[u32], case: QkvCase) {
    let (m, hidden, heads, kv_heads, hd, group, splits) = case;
    let (q_dim, kv_dim) = (heads * hd, kv_heads * hd);
    let n = q_dim + 2 * kv_dim;
    let lin = RandLinear::new(rng, hidden, n, Some(group), false, true);
    let a = rng.vec_f16(m * hidden, -1.0, 1.0);
    if tile.input_order() == InputOrder::Frag16 && hidden % 128 != 0 {
        return;
    }
    let splits = if tile_splits.contains(&splits) { splits } else { 1 };
    let dl = upload_linear(g, lin.repack(ColumnOrder::QkvRope { head_dim: hd, q_dim, kv_dim }));
    let am = a_for(g, tile, &a, m, hidden);
    let a64: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
    let y = matmul_f64(&a64, &lin.dense(), m, hidden, n);
    let (ctx, pos0) = (128usize, 40u32);
    let setup = RopeSetup::new(g, (heads, kv_heads, hd), ctx, 128, pos0);
    let part = g.alloc(splits as usize * m * dl.d.n_pad * 4, "t").unwrap();
    let counters = put(g, &vec![0u32; 256]);
    let cache_len = kv_heads * ctx * hd;
    let l = tile.launch(dl.p.n_pad, dl.p.k_pad, m as u32, splits, TileFormat::Int4);
    let (fused_k, plain_k) = match tile {
        GemmTile::GemvRows { blocks, wide } => {
            (g.k.gemv_rows_qkv_rope.of(blocks, wide), g.k.gemv_rows_store16.of(blocks, wide))
        }
        _ => (&g.k.gemm_wgmma_short_qkv_rope, &g.k.gemm_wgmma_short_store16),
    };
    // Fused (twice), then the plain GEMM into a q/k/v tensor and rope_kv_rows.
    let mut runs = Vec::new();
    for fused in [true, true, false] {
        let (q, kc, vc) = (poisoned(g, m * q_dim * 2), poisoned(g, cache_len * 2), poisoned(g, cache_len * 2));
        let qkv = poisoned(g, m * n * 2);
        let rope = setup.params(&qkv, &q, &kc, &vc);
        let gemm = GemmParams {
            part: part.ptr(),
            counters: counters.ptr(),
            k_splits: splits,
            ..dl.gemm(am.ptr(), m, dl.p.k_pad as usize, n)
        };
        if fused {
            launch(g, fused_k, l, &GemmRopeParams { gemm, rope });
        } else {
            launch(g, plain_k, l, &GemmParams { y16: qkv.ptr(), ..gemm });
            launch(g, &g.k.rope_kv_rows, shapes::rope(m as u32, heads, kv_heads, hd), &rope);
        }
        g.sync().unwrap();
        runs.push((get::<u16>(g, &q, m * q_dim), get::<u16>(g, &kc, cache_len), get::<u16>(g, &vc, cache_len)));
    }
    let what = format!("{tile:?} q/k/v rope M={m} hidden={hidden} heads={heads}/{kv_heads} hd={hd} splits={splits}");
    assert!(runs[0] == runs[1], "{what}: two runs differ");
    assert!(runs[0] == runs[2], "{what}: not the bits of the plain GEMM and rope_kv_rows");
    let (q, kall, vall) = (f16s(&runs[0].0), f16s(&runs[0].1), f16s(&runs[0].2));
    let (mut want_q, mut want_k, mut want_v, mut got_k, mut got_v) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..m {
        let (row, pos) = (&y[r * n..][..n], pos0 + r as u32);
        want_q.extend(rope_f64(&row[..q_dim], hd, pos));
        want_k.extend(rope_f64(&row[q_dim..q_dim + kv_dim], hd, pos));
        want_v.extend_from_slice(&row[q_dim + kv_dim..]);
        for h in 0..kv_heads {
            got_k.extend_from_slice(&kall[(h * ctx + pos as usize) * hd..][..hd]);
            got_v.extend_from_slice(&vall[(h * ctx + pos as usize) * hd..][..hd]);
        }
    }
    check(&q, &want_q, 3e-3, &format!("{what} q"));
    check(&got_k, &want_k, 3e-3, &format!("{what} k"));
    check(&got_v, &want_v, 3e-3, &format!("{what} v"));
    let rows = pos0 as usize..pos0 as usize + m;
    let written =
        |all: &[f64]| (0..kv_heads * ctx).filter(|r| !rows.contains(&(r % ctx))).any(|r| all[r * hd].is_finite());
    assert!(!written(&kall) && !written(&vall), "{what}: wrote cache positions outside the chunk's");
    assert!(get::<u32>(g, &counters, 256).iter().all(|&c| c == 0), "{what}: counters not reset");
}

/// The GEMV-shaped tile (`gemv_rows*_int4_*`, any card; 16 rows in both widths, 32, 48 and 64) on awkward shapes,
/// each A first rearranged into its fragment order by `permute_frag16` (checked against the host's rearrangement:
/// rows past m never written, zeros from k on): K of one span (128), of 200 (zero-filled columns in the last span),
/// 384, 4096 and 11008 (86 spans); N of 9 to 69 tiles; group sizes 32 / 64 / 128 and one group; asymmetric zeros;
/// padded output strides (the padding must stay poisoned); all three epilogues; the same bits from two runs.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemv_rows16_int4_matches_f64() {
    let g = gpu();
    #[rustfmt::skip]
    let cases: &[TileCase] = &[
        (1, 4096, 16 * 37, Some(128), false, false, &[1], 0, 0),
        (16, 384, 16 * 37, Some(32), false, true, &[1], 0, 1),
        (9, 384, 16 * 37, None, false, false, &[1], 0, 2),
        (16, 11008, 16 * 9, Some(128), false, false, &[1], 0, 0),
        (3, 4096, 16 * 21, None, false, true, &[1], 0, 0),
        (16, 200, 16 * 21, Some(32), false, false, &[1], 0, 3),
        (8, 128, 16 * 69, Some(64), false, true, &[1], 0, 0),
        (13, 256, 16 * 11, Some(64), false, false, &[1], 0, 0),
    ];
    for wide in [false, true] {
        gemm_tile_cases(&g, &GemmTileFns::gemv_rows(&g, 1, wide), &format!("gemv_rows16 wide={wide}"), cases);
    }
    #[rustfmt::skip]
    let cases: &[TileCase] = &[
        (17, 4096, 16 * 37, Some(128), false, false, &[1], 0, 0),
        (32, 384, 16 * 21, Some(32), false, true, &[1], 0, 1),
        (40, 11008, 16 * 9, Some(128), false, false, &[1], 0, 0),
        (48, 200, 16 * 21, None, false, false, &[1], 0, 3),
        (57, 256, 16 * 11, Some(64), false, true, &[1], 0, 0),
        (64, 4096, 16 * 37, Some(128), false, false, &[1], 0, 2),
    ];
    for case in cases {
        let blocks = (case.0 as u32).div_ceil(16);
        let tile = GemmTileFns::gemv_rows(&g, blocks, false);
        gemm_tile_cases(&g, &tile, &format!("gemv_rows{}", 16 * blocks), std::slice::from_ref(case));
    }
}

/// The same cases on the warp-specialized wgmma tile (`--tune wgmma=ws`; sm_90 only). A test of its own: the
/// tile's producer and consumers wait on each other through mbarriers, and a protocol error hangs instead of
/// failing.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_wgmma_ws_int4_matches_f64_on_long_chunks() {
    let g = gpu();
    if !g.has_wgmma() {
        eprintln!("skipped: {} has no wgmma (sm_90 only)", g.describe());
        return;
    }
    gemm_tile_cases(&g, &GemmTileFns::wgmma_ws(&g), "gemm_wgmma_ws", LONG_CASES);
}

/// A case of `gemm_tile_cases`: rows, K, N, group, act-order, symmetric, K splits, extra A stride, extra Y stride.
type TileCase = (usize, usize, usize, Option<usize>, bool, bool, &'static [u32], usize, usize);

/// The cases of the 128-row tiles (see `gemm128_int4_matches_f64_on_long_chunks`).
const LONG_CASES: &[TileCase] = &[
    (128, 4096, 16 * 37, Some(128), false, false, &[1, 3], 0, 0),
    (100, 320, 16 * 37, Some(64), false, true, &[1, 2], 0, 1),
    (200, 320, 16 * 37, Some(32), true, false, &[1, 2], 8, 1),
    (200, 320, 16 * 37, None, false, false, &[1], 0, 2),
    (512, 11008, 16 * 9, Some(128), false, false, &[1, 2], 0, 0),
    (512, 4096, 16 * 21, None, false, true, &[1], 16, 0),
    (200, 11008, 16 * 21, Some(32), false, false, &[3], 0, 3),
    (512, 320, 16 * 69, Some(64), true, true, &[1], 0, 0),
    (128, 4096, 256, Some(128), true, false, &[2], 0, 0),
    (300, 4096, 128, Some(32), false, false, &[5], 8, 0),
    (130, 200, 16 * 21, Some(32), false, false, &[1, 2], 8, 0),
];

/// Run `cases` on the tile `t` against float64, all three epilogues, outputs poisoned before each run, twice for
/// the same bits, the split counters back at zero after.
fn gemm_tile_cases(g: &Device, t: &GemmTileFns, label: &str, cases: &[TileCase]) {
    let mut rng = Rng(23);
    for &(m, k, n, group, act, sym, splits, lda_extra, ldy_extra) in cases {
        let lin = RandLinear::new(&mut rng, k, n, group, act, sym);
        let d = lin.repack(ColumnOrder::Identity);
        let perm = d.perm.clone();
        let dl = upload_linear(g, d);
        let (lda, ldy) = (k + lda_extra, n + ldy_extra);
        // A's columns in the sorted row order, as the producers write them; the stride padding is NaN, which
        // the kernel must never read.
        let a = rng.vec_f16(m * k, -1.0, 1.0);
        let mut a_dev = vec![f16::NAN; m * lda];
        for r in 0..m {
            for c in 0..k {
                a_dev[r * lda + c] = a[r * k + perm.as_ref().map_or(c, |p| p[c] as usize)];
            }
        }
        let am = put(g, &a_dev);
        // The weights-in-registers tiles read A rearranged, k_pad wide; the GEMV-shaped one as its fragments.
        let ap = match t.order {
            InputOrder::Rows => None,
            InputOrder::KSteps => Some(permuted_k(g, &am, m, lda, k, 1, 0)),
            InputOrder::Frag16 => Some(permuted_frag16(g, &am, m, lda, k)),
        };
        let (am, lda) = match &ap {
            Some(ap) => (ap, dl.p.k_pad as usize),
            None => (&am, lda),
        };
        let a64: Vec<f64> = a.iter().map(|v| v.to_f64()).collect();
        let want = matmul_f64(&a64, &lin.dense(), m, k, n);
        let y0 = rng.vec_f32(m * ldy, -1.0, 1.0);
        let (y, y2, yr, y16) =
            (poisoned(g, m * ldy * 4), poisoned(g, m * ldy * 4), put(g, &y0), poisoned(g, m * ldy * 2));
        let max_splits = *splits.iter().max().unwrap() as usize;
        let part = g.alloc(max_splits * m * dl.d.n_pad * 4, "t").unwrap();
        let counters = put(g, &vec![0u32; 64]);
        // The n columns of each row of an m × ldy output, and whether the stride padding is still poison.
        let cols = |v: Vec<f64>| -> Vec<f64> { v.chunks(ldy).flat_map(|r| r[..n].to_vec()).collect() };
        for &k_splits in splits {
            let base =
                GemmParams { part: part.ptr(), counters: counters.ptr(), k_splits, ..dl.gemm(am.ptr(), m, lda, ldy) };
            let grid = (dl.p.n_pad.div_ceil(t.slots), (m as u32).div_ceil(t.rows), k_splits);
            set(g, &y, &vec![0xFFu8; m * ldy * 4]);
            set(g, &y2, &vec![0xFFu8; m * ldy * 4]);
            set(g, &y16, &vec![0xFFu8; m * ldy * 2]);
            set(g, &yr, &y0);
            let [f32k, resk, f16k] = t.fns;
            let l = Launch::new(grid, t.threads, t.smem);
            launch(g, f32k, l, &GemmParams { y32: y.ptr(), ..base });
            launch(g, resk, l, &GemmParams { y32: yr.ptr(), ..base });
            launch(g, f16k, l, &GemmParams { y16: y16.ptr(), ..base });
            launch(g, f32k, l, &GemmParams { y32: y2.ptr(), ..base });
            g.sync().unwrap();
            let what = format!(
                "{label} M={m} K={k} N={n} G={group:?} act={act} sym={sym} splits={k_splits} lda={lda} ldy={ldy}"
            );
            assert!(get::<u32>(g, &counters, 64).iter().all(|&c| c == 0), "{what}: split counters not reset");
            let bits: Vec<u32> = get(g, &y, m * ldy);
            let bits2: Vec<u32> = get(g, &y2, m * ldy);
            assert!(bits == bits2, "{what}: two runs differ");
            for (i, &b) in bits.iter().enumerate() {
                if i % ldy >= n {
                    assert_eq!(b, u32::MAX, "{what}: wrote stride padding at row {} col {}", i / ldy, i % ldy);
                }
            }
            let got: Vec<f64> = bits.iter().map(|&b| f32::from_bits(b) as f64).collect();
            check(&cols(got), &want, 2e-3, &what);
            let got_r: Vec<f64> = get::<f32>(g, &yr, m * ldy).iter().map(|&v| v as f64).collect();
            let want_r: Vec<f64> = want.iter().enumerate().map(|(i, w)| w + y0[(i / n) * ldy + i % n] as f64).collect();
            check(&cols(got_r), &want_r, 2e-3, &format!("{what} residual"));
            let got16 = f16s(&get::<u16>(g, &y16, m * ldy));
            check(&cols(got16), &want, 3e-3, &format!("{what} f16"));
        }
    }
}

/// The small-chunk GEMM (`gemm_small_int4_*`, at most 16 rows) against float64, both epilogues: m of 1, 3, 8, 9
/// (either side of the kernel skipping rows 8..15) and 16; K of 64 (one step: the last double step is half empty),
/// 200 (not a multiple of 64), 320 (an odd number of steps), 4096 and 11008; N of 16 to 12288; group sizes 32, 64,
/// 128 and one group (also one of 344 chunks, not a power of two); asymmetric zeros; act-order, with A's columns
/// permuted as the engine's producers write them; row strides wider than the rows. Each case runs the shape the
/// engine would choose and variants: one tile per block (7 idle warps), 3 tiles per block with 3 splits (empty
/// splits where K has fewer than 5 steps), 16 splits. Outputs are poisoned before every run; each shape runs twice
/// and must give the same bits, and leave the split counters at zero.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn gemm_small_matches_f64_in_both_widths() {
    let g = gpu();
    let mut rng = Rng(23);
    // (m, K, N, group, act-order, symmetric)
    type Case = (usize, usize, usize, Option<usize>, bool, bool);
    let cases: &[Case] = &[
        (1, 64, 16, Some(32), false, true),
        (16, 64, 48, Some(32), false, false),
        (3, 200, 48, Some(32), false, false),
        (16, 200, 48, None, false, false),
        (16, 256, 48, Some(64), true, false),
        (8, 320, 32, Some(64), true, true),
        (9, 1024, 48, Some(32), true, false),
        (3, 4096, 4096, Some(128), true, true),
        (16, 4096, 4096, Some(128), false, false),
        (1, 11008, 64, None, false, false),
        (16, 11008, 64, Some(128), false, true),
        (16, 4096, 12288, Some(128), false, true),
    ];
    for (bits, &(m, k, n, group, act, sym)) in WIDTHS.iter().flat_map(|&b| cases.iter().map(move |c| (b, c))) {
        let lin = RandLinear::of_width(&mut rng, bits, k, n, group, act, sym);
        let d = lin.repack(ColumnOrder::Identity);
        let perm = d.perm.clone();
        let dl = upload_linear(&g, d);
        let (tiles, steps, n_pad) = (dl.d.tiles() as u32, dl.d.steps() as u32, dl.d.n_pad);
        // Row strides wider than the rows on the smaller shapes: the kernel must use lda and ldy, and write nothing
        // past column n.
        let (lda, ldy) = if k * n <= 1 << 20 { (k + 8, n + 16) } else { (k, n) };
        let a = rng.vec_f16(m * k, -1.0, 1.0);
        let mut a_dev = vec![f16::ZERO; m * lda];
        for r in 0..m {
            for c in 0..k {
                a_dev[r * lda + c] = a[r * k + perm.as_ref().map_or(c, |p| p[c] as usize)];
            }
        }
        let want = lin.apply_rows(&a.iter().map(|v| v.to_f64()).collect::<Vec<_>>(), m);
        let am = put(&g, &a_dev);
        let y0 = rng.vec_f32(m * ldy, -1.0, 1.0);
        let (y16, yr) = (poisoned(&g, m * ldy * 2), put(&g, &y0));

        let mut shapes = vec![gemm_small_shape(tiles, steps, m as u32, g.limits.sm_count).expect("a shape")];
        let max_splits = 16;
        for (tiles_per_block, splits) in [(1, 1), (3, 3), (16, max_splits)] {
            let s = GemmTile::Small { tiles_per_block, splits };
            if gemm_small_per_split(steps, splits) <= GEMM_SMALL_MAX_STEPS_PER_SPLIT && !shapes.contains(&s) {
                shapes.push(s);
            }
        }
        let part = g.alloc(max_splits as usize * 16 * n_pad * 4, "t").unwrap();
        let counters = put(&g, &vec![0u32; tiles as usize]);
        for shape in shapes {
            let what = format!("gemm_small {bits:?} M={m} K={k} N={n} G={group:?} act={act} sym={sym} {shape:?}");
            let GemmTile::Small { splits, .. } = shape else { unreachable!("only small shapes here") };
            let l = shape.launch(n_pad as u32, dl.p.k_pad, m as u32, splits, format(bits));
            let base = GemmParams { part: part.ptr(), counters: counters.ptr(), ..dl.gemm(am.ptr(), m, lda, ldy) };
            let mut first: Option<(Vec<u16>, Vec<u32>)> = None;
            for run in 0..2 {
                set(&g, &y16, &vec![0xFFu8; m * ldy * 2]);
                set(&g, &yr, &y0);
                let (store16, residual) =
                    (g.k.gemm_small_store16.of(format(bits)), g.k.gemm_small_residual.of(format(bits)));
                launch(&g, store16, l, &GemmParams { y16: y16.ptr(), k_splits: splits, ..base });
                launch(&g, residual, l, &GemmParams { y32: yr.ptr(), k_splits: splits, ..base });
                g.sync().unwrap();
                assert!(
                    get::<u32>(&g, &counters, tiles as usize).iter().all(|&c| c == 0),
                    "{what}: counters not reset"
                );
                let bits16: Vec<u16> = get(&g, &y16, m * ldy);
                let bits32: Vec<u32> = get::<f32>(&g, &yr, m * ldy).iter().map(|v| v.to_bits()).collect();
                let (mut got16, mut got_r, mut want_r) = (Vec::new(), Vec::new(), Vec::new());
                for r in 0..m {
                    for c in 0..ldy {
                        let i = r * ldy + c;
                        if c < n {
                            got16.push(f16::from_bits(bits16[i]).to_f64());
                            got_r.push(f32::from_bits(bits32[i]) as f64);
                            want_r.push(want[r * n + c] + y0[i] as f64);
                        } else {
                            assert!(bits16[i] == 0xFFFF && bits32[i] == y0[i].to_bits(), "{what}: wrote past column n");
                        }
                    }
                }
                check(&got16, &want, 3e-3, &format!("{what} f16 run {run}"));
                check(&got_r, &want_r, 2e-3, &format!("{what} residual run {run}"));
                match &first {
                    None => first = Some((bits16, bits32)),
                    Some((b16, b32)) => {
                        assert!(b16 == &bits16 && b32 == &bits32, "{what}: the second run differs from the first")
                    }
                }
            }
        }
    }
}

/// µs per launch of `launch(i)` for i = 0..64 back to back between two events: the median of 5 runs after one to
/// warm up.
fn time_per_launch(g: &Device, launch: &dyn Fn(usize)) -> f64 {
    let mut times = Vec::new();
    for rep in 0..6 {
        let (a, b) = (g.event(true).unwrap(), g.event(true).unwrap());
        a.record(&g.stream).unwrap();
        for i in 0..64 {
            launch(i);
        }
        b.record(&g.stream).unwrap();
        g.sync().unwrap();
        if rep > 0 {
            times.push(a.elapsed_ms(&b).unwrap() as f64 * 1e3 / 64.0);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Per-launch time of the small-chunk GEMM on the Baichuan-7B shapes with 16 rows: the engine's shape, every other
/// shape the chooser considers, and the one-row GEMV over the same weights for reference. Each launch reads its own
/// copy of the weights (256 MB of copies, so that nothing is served from L2 that a prefill would read from memory);
/// 64 launches back to back between two events, median of 5.
#[test]
#[ignore = "needs a GPU: a measurement, run by hand (--nocapture)"]
fn gemm_small_int4_time_per_launch() {
    let g = gpu();
    let mut rng = Rng(98);
    let m = 16usize;
    let time = |launch: &dyn Fn(usize)| time_per_launch(&g, launch);
    for &(name, k, n) in
        &[("q/k/v", 4096usize, 12288usize), ("o", 4096, 4096), ("gate/up", 4096, 22016), ("down", 11008, 4096)]
    {
        let lin = RandLinear::new(&mut rng, k, n, Some(128), false, true);
        let dl = upload_linear(&g, lin.repack(ColumnOrder::Identity));
        let bytes = dl.d.qw.len() * 4;
        let copies = (256usize << 20).div_ceil(bytes).clamp(1, 64);
        let pool: Vec<DeviceBuffer> = (0..copies).map(|_| put(&g, &dl.d.qw)).collect();
        let (tiles, steps) = (dl.d.tiles() as u32, dl.d.steps() as u32);
        let a = rng.vec_f16(m * k, -1.0, 1.0);
        let (am, x16) = (put(&g, &a), put(&g, &a[..k]));
        let y16 = poisoned(&g, m * n * 2);
        let y = poisoned(&g, n * 4);
        let part = g.alloc(plan::GEMM_SPLIT_ROWS * dl.d.n_pad * 4, "t").unwrap();
        let counters = put(&g, &vec![0u32; tiles as usize]);
        let gb = |us: f64| (bytes + dl.d.sz.len() * 4) as f64 / us / 1e3;

        let gp = GemvParams { x16: x16.ptr(), y: y.ptr(), ..dl.p };
        let (grid, tpb) = shapes::gemv_grid(tiles, g.limits.sm_count, 12);
        let gp = GemvParams { tiles_per_block: tpb, ..gp };
        let shape = gemv_launch(GemvStream::Registers, grid, 8, dl.p.k_pad, 1, TileFormat::Int4);
        let us = time(&|i| {
            let q = GemvParams { qw: pool[i % copies].ptr(), ..gp };
            launch(&g, g.k.gemv_store.of(TileFormat::Int4), shape, &q);
        });
        println!("{name:8} K={k:5} N={n:5}  gemv 1 row (reference)            {us:7.2} µs {:6.0} GB/s", gb(us));

        let base =
            GemmParams { y16: y16.ptr(), part: part.ptr(), counters: counters.ptr(), ..dl.gemm(am.ptr(), m, k, n) };
        let chosen = gemm_small_shape(tiles, steps, m as u32, g.limits.sm_count).unwrap();
        for tiles_per_block in [8u32, 16, 32] {
            for splits in 1..=16u32 {
                let per_split = gemm_small_per_split(steps, splits);
                if per_split > GEMM_SMALL_MAX_STEPS_PER_SPLIT || steps.div_ceil(per_split) != splits {
                    continue;
                }
                let shape = GemmTile::Small { tiles_per_block, splits };
                let l = shape.launch(dl.p.n_pad, dl.p.k_pad, m as u32, splits, TileFormat::Int4);
                let us = time(&|i| {
                    let q = GemmParams { qw: pool[i % copies].ptr(), k_splits: splits, ..base };
                    launch(&g, g.k.gemm_small_store16.of(TileFormat::Int4), l, &q);
                });
                let gx = l.grid.0;
                println!(
                    "{name:8} K={k:5} N={n:5}  small {tiles_per_block:2} tiles/block × {splits:2} splits ({:4} blocks) {us:7.2} µs {:6.0} GB/s{}",
                    gx * splits,
                    gb(us),
                    if shape == chosen { "  <- engine" } else { "" }
                );
            }
        }
    }
}

/// Per-launch time of the short wgmma tile (`gemm_wgmma_short_int4_*`, sm_90) on the Baichuan-7B shapes with 16 rows
/// at split counts up to 16 (within the workspace), the engine's marked, with the one-row GEMV over the same weights for
/// reference; o and down add into a residual stream as in the engine. Each launch reads its own copy of the weights
/// (256 MB of copies); 64 launches back to back between two events, median of 5.
#[test]
#[ignore = "needs a GPU: a measurement, run by hand (--nocapture)"]
fn gemm_wgmma_short_int4_time_per_launch() {
    let g = gpu();
    if !g.has_wgmma() {
        eprintln!("skipped: {} has no wgmma (sm_90 only)", g.describe());
        return;
    }
    let mut rng = Rng(99);
    let m = 16usize;
    let time = |launch: &dyn Fn(usize)| time_per_launch(&g, launch);
    for &(name, k, n, residual) in &[
        ("q/k/v", 4096usize, 12288usize, false),
        ("o", 4096, 4096, true),
        ("gate/up", 4096, 22016, false),
        ("down", 11008, 4096, true),
    ] {
        let lin = RandLinear::new(&mut rng, k, n, Some(128), false, true);
        let dl = upload_linear(&g, lin.repack(ColumnOrder::Identity));
        let bytes = dl.d.qw.len() * 4;
        let copies = (256usize << 20).div_ceil(bytes).clamp(1, 64);
        let pool: Vec<DeviceBuffer> = (0..copies).map(|_| put(&g, &dl.d.qw)).collect();
        let k_pad = dl.p.k_pad as usize;
        let a = rng.vec_f16(m * k_pad, -1.0, 1.0);
        let (am, x16) = (put(&g, &a), put(&g, &a[..k]));
        let y = poisoned(&g, m * n * 4);
        let yg = poisoned(&g, n * 4);
        let part_floats = plan::GEMM_SPLIT_ROWS * dl.d.n_pad;
        let part = g.alloc(part_floats * 4, "t").unwrap();
        let counters = put(&g, &vec![0u32; 4096]);
        let gb = |us: f64| (bytes + dl.d.sz.len() * 4) as f64 / us / 1e3;

        let (grid, tpb) = shapes::gemv_grid(dl.d.tiles() as u32, g.limits.sm_count, 12);
        let gp = GemvParams { x16: x16.ptr(), y: yg.ptr(), tiles_per_block: tpb, ..dl.p };
        let shape = gemv_launch(GemvStream::Registers, grid, 8, dl.p.k_pad, 1, TileFormat::Int4);
        let us = time(&|i| {
            let q = GemvParams { qw: pool[i % copies].ptr(), ..gp };
            launch(&g, g.k.gemv_store.of(TileFormat::Int4), shape, &q);
        });
        println!("{name:8} K={k:5} N={n:5}  gemv 1 row (reference)   {us:7.2} µs {:6.0} GB/s", gb(us));

        let kernel = if residual { &g.k.gemm_wgmma_short_residual } else { &g.k.gemm_wgmma_short_store32 };
        let base =
            GemmParams { y32: y.ptr(), part: part.ptr(), counters: counters.ptr(), ..dl.gemm(am.ptr(), m, k_pad, n) };
        let resident = g.limits.sm_count * shapes::GEMM_WGMMA_SHORT_BLOCKS_PER_SM;
        let chosen = shapes::gemm_short_splits(resident, dl.p.n_pad, dl.p.k_pad, m as u32, part_floats, 4096);
        let steps = dl.p.k_pad / 64;
        for splits in [1u32, 2, 3, 4, 5, 6, 8, 10, 12, 16] {
            if splits > steps || splits as usize * m * dl.d.n_pad > part_floats {
                continue;
            }
            let l = GemmTile::WgmmaShort.launch(dl.p.n_pad, dl.p.k_pad, m as u32, splits, TileFormat::Int4);
            let us = time(&|i| {
                let q = GemmParams { qw: pool[i % copies].ptr(), k_splits: splits, ..base };
                launch(&g, kernel, l, &q);
            });
            println!(
                "{name:8} K={k:5} N={n:5}  short × {splits:2} splits ({:4} blocks) {us:7.2} µs {:6.0} GB/s{}",
                l.grid.0 * splits,
                gb(us),
                if splits == chosen { "  <- engine" } else { "" }
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// fp16 tiles (unquantized checkpoints)

/// Random `[n][k]` fp16 weights (PyTorch's layout) repacked into fp16 tiles of the Identity order.
fn dense_tiles(rng: &mut Rng, k: usize, n: usize) -> (Vec<f16>, DeviceLinear) {
    let w = rng.vec_f16(n * k, -0.1, 0.1);
    let d = layout::repack_dense_parts_in(&[(Floats::F16(&w), n, "w")], k, ColumnOrder::Identity, "test", Vec::new())
        .unwrap();
    (w, d)
}

/// The fp16 tiles hold every weight exactly, in every fused part and column order (rows past K and padding slots
/// are zero-weight); bf16 weights are rounded to fp16, and one outside fp16's range is refused with the tensor's name.
#[test]
fn f16_layout_reads_back_the_weights() {
    let mut rng = Rng(31);
    for (k, n) in [(64usize, 16usize), (200, 24), (72, 40)] {
        let (a, b) = (rng.vec_f16(n * k, -1.0, 1.0), rng.vec_f16(n * k, -1.0, 1.0));
        let views = [(Floats::F16(&a), n, "gate"), (Floats::F16(&b), n, "up")];
        let d =
            layout::repack_dense_parts_in(&views, k, ColumnOrder::GateUp { inter: n }, "gate_up", Vec::new()).unwrap();
        assert_eq!((d.format, d.groups, d.k_pad), (TileFormat::F16, 1, k.next_multiple_of(64)));
        assert_eq!(d.qw.len(), d.n_pad * d.k_pad / 2, "four 16-byte words per lane and step");
        for (slot, &col) in d.col_map.iter().enumerate() {
            for row in 0..d.k_pad {
                let got = layout::dequant_device(&d, slot, row);
                let want = match (col, row < k) {
                    (PAD_SLOT, _) | (_, false) => 0.0,
                    (c, true) if (c as usize) < n => a[c as usize * k + row].to_f32(),
                    (c, true) => b[(c as usize - n) * k + row].to_f32(),
                };
                assert_eq!(got, want, "K={k} slot {slot} row {row}");
            }
        }
    }
    let bf: Vec<half::bf16> = [0.5f32, -3.25e-3, 1.0e5].iter().map(|&v| half::bf16::from_f32(v)).collect();
    let ok = layout::repack_dense_parts_in(&[(Floats::Bf16(&bf[..2]), 1, "w")], 2, ColumnOrder::Identity, "o", vec![]);
    let d = ok.unwrap();
    assert_eq!(layout::dequant_device(&d, 0, 1), f16::from_f32(bf[1].to_f32()).to_f32());
    let err =
        layout::repack_dense_parts_in(&[(Floats::Bf16(&bf), 1, "model.w")], 3, ColumnOrder::Identity, "o", vec![])
            .expect_err("1e5 does not fit fp16");
    let msg = err.to_string();
    assert!(msg.contains("model.w") && msg.contains("float16") && msg.contains("--backend cpu"), "{msg}");
    // Whole tensors (embeddings, norms) convert in parallel chunks: every value rounded as one by one, and the first
    // overflow found by its index, past the first chunk too.
    let mut big: Vec<half::bf16> = (0..150_000).map(|i| half::bf16::from_f32((i as f32 - 7e4) * 1e-3)).collect();
    let bits = layout::fp16_tensor(Floats::Bf16(&big)).unwrap();
    assert!(bits.iter().zip(&big).all(|(&h, b)| h == f16::from_f32(b.to_f32()).to_bits()));
    big[140_000] = half::bf16::from_f32(1e6);
    big[90_000] = half::bf16::from_f32(-2e5);
    assert_eq!(layout::fp16_tensor(Floats::Bf16(&big)), Err(90_000));
}

/// The GEMV (plain and with the norm and residual epilogues), the 64-row GEMM and the small-chunk GEMM over fp16
/// tiles, against float64 with poisoned outputs.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn f16_tiles_match_f64() {
    let g = gpu();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(32);
        let f16f = TileFormat::F16;
        for (k, n) in [(64usize, 16usize), (200, 24), (1024, 136), (4096, 256), (11008, 64)] {
            let (w, d) = dense_tiles(&mut rng, k, n);
            let dl = upload_linear(&g, d);
            let apply = |x: &[f64]| -> Vec<f64> {
                (0..n).map(|c| (0..k).map(|r| x[r] * w[c * k + r].to_f64()).sum()).collect()
            };
            // GEMV: plain, and residual + norm.
            let x = rng.vec_f16(k, -1.0, 1.0);
            let xm = put(&g, &x);
            let y = poisoned(&g, n * 4);
            gemv(&g, s, gk.store.of(f16f), &dl, &GemvParams { x16: xm.ptr(), y: y.ptr(), ..dl.p });
            let want = apply(&x.iter().map(|v| v.to_f64()).collect::<Vec<_>>());
            let got: Vec<f64> = get::<f32>(&g, &y, n).iter().map(|&v| v as f64).collect();
            check(&got, &want, 2e-3, &format!("f16 gemv store K={k} N={n}"));
            let y0 = rng.vec_f32(n, -1.0, 1.0);
            let (ym, ssq) = (put(&g, &y0), poisoned(&g, dl.d.tiles() * 4));
            let p = GemvParams { x16: xm.ptr(), y: ym.ptr(), ssq_out: ssq.ptr(), ..dl.p };
            gemv_warps(&g, s, gk.residual_wide.of(f16f), 16, &dl, &p);
            let want_r: Vec<f64> = want.iter().zip(&y0).map(|(a, &b)| a + b as f64).collect();
            let got_r: Vec<f64> = get::<f32>(&g, &ym, n).iter().map(|&v| v as f64).collect();
            check(&got_r, &want_r, 1e-3, &format!("f16 gemv residual K={k} N={n}"));
            let xs = rng.vec_f32(k, -3.0, 3.0);
            let nw = rng.vec_f16(k, 0.5, 1.5);
            let ss: f64 = xs.iter().map(|&v| v as f64 * v as f64).sum();
            let half = half_inputs(&xs, &nw);
            let (hm, ssm) = (put(&g, &half), put(&g, &[ss as f32]));
            let p = GemvParams { x16: hm.ptr(), ssq: ssm.ptr(), n_ssq: 1, y: y.ptr(), ..dl.p };
            set(&g, &y, &vec![0xFFu8; n * 4]);
            gemv(&g, s, gk.norm_store.of(f16f), &dl, &p);
            let inv = 1.0 / (ss / k as f64 + 1e-6).sqrt();
            let xn: Vec<f64> = xs.iter().zip(&nw).map(|(&a, b)| a as f64 * inv * b.to_f64()).collect();
            let got: Vec<f64> = get::<f32>(&g, &y, n).iter().map(|&v| v as f64).collect();
            check(&got, &apply(&xn), 2e-3, &format!("f16 gemv norm K={k} N={n}"));

            // GEMMs: 64-row tiles (with split-K) and the small-chunk kernel the engine picks for ≤ 16 rows.
            for (m, k_splits) in [(1usize, 1u32), (7, 3), (16, 1), (70, 2)] {
                let a = rng.vec_f16(m * k, -1.0, 1.0);
                let am = put(&g, &a);
                let want: Vec<f64> = (0..m)
                    .flat_map(|r| apply(&a[r * k..(r + 1) * k].iter().map(|v| v.to_f64()).collect::<Vec<_>>()))
                    .collect();
                let y = poisoned(&g, m * n * 4);
                let part = g.alloc(16 * m.max(16) * dl.d.n_pad * 4, "t").unwrap();
                let counters = put(&g, &vec![0u32; 64]);
                let base = GemmParams { part: part.ptr(), counters: counters.ptr(), ..dl.gemm(am.ptr(), m, k, n) };
                let grid = (dl.p.n_pad.div_ceil(64), (m as u32).div_ceil(64), k_splits);
                let l = Launch::new(grid, 128, gemm_smem_bytes(64, f16f));
                launch(&g, g.k.gemm_store32.of(f16f), l, &GemmParams { y32: y.ptr(), k_splits, ..base });
                g.sync().unwrap();
                let got: Vec<f64> = get::<f32>(&g, &y, m * n).iter().map(|&v| v as f64).collect();
                check(&got, &want, 2e-3, &format!("f16 gemm64 M={m} K={k} N={n} splits={k_splits}"));
                if m <= 16 {
                    let (tiles, steps) = (dl.d.tiles() as u32, dl.d.steps() as u32);
                    let Some(shape @ GemmTile::Small { splits, .. }) =
                        gemm_small_shape(tiles, steps, m as u32, g.limits.sm_count)
                    else {
                        continue;
                    };
                    let y16 = poisoned(&g, m * n * 2);
                    let l = shape.launch(dl.p.n_pad, dl.p.k_pad, m as u32, splits, f16f);
                    launch(
                        &g,
                        g.k.gemm_small_store16.of(f16f),
                        l,
                        &GemmParams { y16: y16.ptr(), k_splits: splits, ..base },
                    );
                    g.sync().unwrap();
                    let what = format!("f16 gemm_small M={m} K={k} N={n} {shape:?}");
                    check(&f16s(&get::<u16>(&g, &y16, m * n)), &want, 3e-3, &what);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Attention

fn attention_ref(q: &[f64], k: &[f64], v: &[f64], hd: usize, ctx: usize, kvh: usize, len: usize) -> Vec<f64> {
    let scale = 1.0 / (hd as f64).sqrt();
    let s: Vec<f64> =
        (0..len).map(|p| (0..hd).map(|d| q[d] * k[(kvh * ctx + p) * hd + d]).sum::<f64>() * scale).collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    (0..hd).map(|d| (0..len).map(|p| e[p] / z * v[(kvh * ctx + p) * hd + d]).sum()).collect()
}

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn attention_decode_and_prefill_match_f64() {
    let g = gpu();
    // The cluster merge runs on every whole H100 / H200 (a MIG slice might not hold a cluster of 16).
    assert!(!g.has_wgmma() || g.attn_cluster_max > 0, "{}: no cluster of 16 attention blocks fits", g.describe());
    let mut rng = Rng(31);
    for &(heads, kv_heads, hd, ctx) in &[(4usize, 4usize, 16usize, 40usize), (8, 2, 64, 300), (32, 32, 128, 2100)] {
        let kc = rng.vec_f16(kv_heads * ctx * hd, -1.0, 1.0);
        let vc = rng.vec_f16(kv_heads * ctx * hd, -1.0, 1.0);
        let (kf, vf): (Vec<f64>, Vec<f64>) =
            (kc.iter().map(|v| v.to_f64()).collect(), vc.iter().map(|v| v.to_f64()).collect());
        let (km, vm) = (put(&g, &kc), put(&g, &vc));
        for splits in [1u32, 3, 16, 64] {
            for pos in [0usize, 1, ctx / 2, ctx - 1] {
                let q = rng.vec_f16(heads * hd, -2.0, 2.0);
                let qm = put(&g, &q);
                let po = g.alloc(heads * splits as usize * hd * 4, "t").unwrap();
                let pml = g.alloc(heads * splits as usize * 8, "t").unwrap();
                let counters = put(&g, &vec![0u32; heads]);
                let pm = put(&g, &[pos as u32]);
                let p = AttnParams {
                    q: qm.ptr(),
                    k_cache: km.ptr(),
                    v_cache: vm.ptr(),
                    out: DevPtr::NULL, // each launch below gives its own freshly poisoned output
                    part_o: po.ptr(),
                    part_ml: pml.ptr(),
                    counters: counters.ptr(),
                    pos: pm.ptr(),
                    out_idx: DevPtr::NULL,
                    heads: heads as u32,
                    kv_heads: kv_heads as u32,
                    head_dim: hd as u32,
                    ctx: ctx as u32,
                    splits,
                    scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
                    rows: 1,
                    order: 0,
                };
                let mut want = Vec::new();
                for h in 0..heads {
                    let qh: Vec<f64> = q[h * hd..(h + 1) * hd].iter().map(|v| v.to_f64()).collect();
                    want.extend(attention_ref(&qh, &kf, &vf, hd, ctx, h / (heads / kv_heads), pos + 1));
                }
                let what = format!("attn decode heads={heads}/{kv_heads} hd={hd} pos={pos} splits={splits}");
                // Twice each on fresh poisoned outputs, the same bits both times: the split kernel, and on sm_90 the
                // cluster merge (bits of its own: another merge order).
                let decode = shapes::attn_decode(heads as u32, splits);
                let mut kernels = vec![("split", &g.k.attn_decode, decode)];
                if splits <= g.attn_cluster_max {
                    kernels.push(("cluster", &g.k.attn_decode_cluster, decode.in_clusters_y(splits)));
                }
                for &(name, kernel, shape) in &kernels {
                    let mut first = None;
                    for run in 0..2 {
                        let out = poisoned(&g, heads * hd * 2);
                        let p = AttnParams { out: out.ptr(), ..p };
                        launch(&g, kernel, shape, &p);
                        g.sync().unwrap();
                        let bits = get::<u16>(&g, &out, heads * hd);
                        check(&f16s(&bits), &want, 3e-3, &format!("{what} {name} run {run}"));
                        let first = first.get_or_insert_with(|| bits.clone());
                        assert_eq!(*first, bits, "{what} {name}: run {run} changed bits");
                    }
                }
                // Act-order: the output scattered into o_proj's sorted row order.
                let inv = shuffled(&mut rng, heads * hd);
                let (im, out2) = (put(&g, &inv), poisoned(&g, heads * hd * 2));
                let p2 = AttnParams { out: out2.ptr(), out_idx: im.ptr(), ..p };
                for &(name, kernel, shape) in &kernels {
                    launch(&g, kernel, shape, &p2);
                    g.sync().unwrap();
                    let all = f16s(&get::<u16>(&g, &out2, heads * hd));
                    let got: Vec<f64> = (0..heads * hd).map(|c| all[inv[c] as usize]).collect();
                    check(&got, &want, 3e-3, &format!("{what} {name} scattered"));
                }
                assert!(get::<u32>(&g, &counters, heads).iter().all(|&c| c == 0), "{what}: counters not reset");
            }
        }
        // Prefill: rows at positions pos0.. attend causally.
        let rows = 5usize;
        let pos0 = ctx - rows - 1;
        let q = rng.vec_f16(rows * heads * hd, -2.0, 2.0);
        let (qm, pm) = (put(&g, &q), put(&g, &[pos0 as u32]));
        let out = poisoned(&g, rows * heads * hd * 2);
        let p = AttnParams {
            q: qm.ptr(),
            k_cache: km.ptr(),
            v_cache: vm.ptr(),
            out: out.ptr(),
            pos: pm.ptr(),
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            head_dim: hd as u32,
            ctx: ctx as u32,
            splits: 1,
            scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
            ..Default::default()
        };
        launch(&g, &g.k.attn_prefill, Launch::new((heads as u32, rows as u32, 1), 128, 0), &p);
        g.sync().unwrap();
        let mut want = Vec::new();
        for r in 0..rows {
            for h in 0..heads {
                let qh: Vec<f64> = q[(r * heads + h) * hd..][..hd].iter().map(|v| v.to_f64()).collect();
                want.extend(attention_ref(&qh, &kf, &vf, hd, ctx, h / (heads / kv_heads), pos0 + r + 1));
            }
        }
        check(&f16s(&get::<u16>(&g, &out, rows * heads * hd)), &want, 3e-3, &format!("attn prefill hd={hd}"));
    }
}

/// The tensor-core prefill kernels (through the engine's dispatch, `shapes::attn_prefill`) against the float64
/// reference: head_dim 64 and 128, GQA and MHA; chunks of 1, 5 (fewer than a warp's 16 rows), 64, 100 and 200 rows
/// (partial row tiles) at the start of the cache and after earlier chunks (pos0 = 300, not a multiple of the
/// 64-position key tile, so the causal diagonal crosses a tile boundary), and one long context. The cache
/// positions past the chunk are NaN: the kernel must neither score them nor weight them by zero. Each case runs
/// twice on freshly poisoned outputs and must give the same bits.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn attention_prefill_tc_matches_f64_and_is_deterministic() {
    let g = gpu();
    let mut rng = Rng(37);
    // (head_dim, heads, kv_heads, ctx, rows, pos0)
    let mut cases = Vec::new();
    for hd in [64usize, 128] {
        for (heads, kv_heads) in [(8usize, 2usize), (4, 4)] {
            for rows in [1usize, 5, 64, 100, 200] {
                for pos0 in [0usize, 300] {
                    cases.push((hd, heads, kv_heads, 560usize, rows, pos0));
                }
            }
        }
        cases.push((hd, 8, 2, 2200, 150, 2011));
    }
    let nan = f16::from_bits(0x7e00);
    for (hd, heads, kv_heads, ctx, rows, pos0) in cases {
        let end = pos0 + rows;
        let mut kc = rng.vec_f16(kv_heads * ctx * hd, -1.0, 1.0);
        let mut vc = rng.vec_f16(kv_heads * ctx * hd, -1.0, 1.0);
        for h in 0..kv_heads {
            kc[(h * ctx + end) * hd..(h + 1) * ctx * hd].fill(nan);
            vc[(h * ctx + end) * hd..(h + 1) * ctx * hd].fill(nan);
        }
        let (kf, vf): (Vec<f64>, Vec<f64>) =
            (kc.iter().map(|v| v.to_f64()).collect(), vc.iter().map(|v| v.to_f64()).collect());
        let q = rng.vec_f16(rows * heads * hd, -2.0, 2.0);
        let (qm, km, vm, pm) = (put(&g, &q), put(&g, &kc), put(&g, &vc), put(&g, &[pos0 as u32]));
        let n_out = rows * heads * hd;
        let out = poisoned(&g, n_out * 2);
        let p = AttnParams {
            q: qm.ptr(),
            k_cache: km.ptr(),
            v_cache: vm.ptr(),
            out: out.ptr(),
            pos: pm.ptr(),
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            head_dim: hd as u32,
            ctx: ctx as u32,
            splits: 1,
            scale_log2: std::f32::consts::LOG2_E / (hd as f32).sqrt(),
            rows: rows as u32,
            ..Default::default()
        };
        let mut want = Vec::with_capacity(n_out);
        for r in 0..rows {
            for h in 0..heads {
                let qh: Vec<f64> = q[(r * heads + h) * hd..][..hd].iter().map(|v| v.to_f64()).collect();
                want.extend(attention_ref(&qh, &kf, &vf, hd, ctx, h / (heads / kv_heads), pos0 + r + 1));
            }
        }
        let what = format!("attn prefill tc hd={hd} heads={heads}/{kv_heads} ctx={ctx} rows={rows} pos0={pos0}");
        let mut first: Option<Vec<u16>> = None;
        for run in 0..2 {
            if run > 0 {
                set(&g, &out, &vec![0xFFu8; n_out * 2]);
            }
            let (which, l) = shapes::attn_prefill(p.head_dim, p.heads, p.rows);
            launch(&g, g.k.attn_prefill_kernel(which), l, &p);
            g.sync().unwrap();
            let bits = get::<u16>(&g, &out, n_out);
            // Per (row, head): one wrong row or head would vanish in the error of the whole output.
            for (i, (got, want)) in f16s(&bits).chunks(hd).zip(want.chunks(hd)).enumerate() {
                check(got, want, 3e-3, &format!("{what} run {run} row {} head {}", i / heads, i % heads));
            }
            match &first {
                None => first = Some(bits),
                Some(b) => assert!(b == &bits, "{what}: the second run differs from the first"),
            }
        }
        // Written in the K order of o_proj's weights-in-registers tile: the same bits, rearranged within each head.
        let steps = poisoned(&g, n_out * 2);
        let (which, l) = shapes::attn_prefill(p.head_dim, p.heads, p.rows);
        launch(&g, g.k.attn_prefill_kernel(which), l, &AttnParams { out: steps.ptr(), order: 1, ..p });
        g.sync().unwrap();
        let want = in_k_steps(first.as_ref().unwrap(), rows, heads * hd);
        assert!(get::<u16>(&g, &steps, n_out) == want, "{what}: k_steps output");
        // ... and as the GEMV-shaped tile's fragments, where o_proj takes that tile (at most 64 rows, whole spans).
        let q_dim = heads * hd;
        if rows <= 64 && q_dim % 128 == 0 {
            let len = rows.div_ceil(16) * 16 * q_dim;
            let frags = poisoned(&g, len * 2);
            launch(&g, g.k.attn_prefill_kernel(which), l, &AttnParams { out: frags.ptr(), order: 2, ..p });
            g.sync().unwrap();
            let plain = first.as_ref().unwrap();
            let want: Vec<u16> = frag16_sources(q_dim, rows)
                .iter()
                .map(|&(r, c)| if r < rows { plain[r * q_dim + c] } else { 0xFFFF })
                .collect();
            assert!(get::<u16>(&g, &frags, len) == want, "{what}: frag16 output");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Row kernels and the head

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn row_kernels_match_f64() {
    let g = gpu();
    let mut rng = Rng(41);
    for &(rows, dim) in &[(1usize, 64usize), (3, 200), (17, 4096)] {
        // embed_tokens
        let vocab = 50usize;
        let table = rng.vec_f16(vocab * dim, -1.0, 1.0);
        let toks: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u64) as u32).collect();
        let (tm, tabm) = (put(&g, &toks), put(&g, &table));
        let x = poisoned(&g, rows * dim * 4);
        let ssq = poisoned(&g, rows * 4);
        let p = EmbedParams {
            tokens: tm.ptr(),
            table: tabm.ptr(),
            x: x.ptr(),
            ssq_out: ssq.ptr(),
            dim: dim as u32,
            ..Default::default()
        };
        launch(&g, &g.k.embed, shapes::per_row(rows as u32), &p);
        g.sync().unwrap();
        let want: Vec<f64> =
            toks.iter().flat_map(|&t| table[t as usize * dim..][..dim].iter().map(|v| v.to_f64())).collect();
        let gx: Vec<f64> = get::<f32>(&g, &x, rows * dim).iter().map(|&v| v as f64).collect();
        check(&gx, &want, 0.0, "embed");
        let want_ss: Vec<f64> = want.chunks(dim).map(|r| r.iter().map(|v| v * v).sum()).collect();
        check(&get::<f32>(&g, &ssq, rows).iter().map(|&v| v as f64).collect::<Vec<_>>(), &want_ss, 1e-5, "embed ssq");
        // Decode: one row sliced over 3 blocks (3 partial sums of squares), with act-order the first q/k/v's input
        // copies (two parts, norm weight folded in).
        let stride = dim + 8;
        let idx = two_part_scatter(&mut rng, dim, stride);
        let norm = rng.vec_f16(dim, 0.5, 1.5);
        let (im, nm, xs) = (put(&g, &idx), put(&g, &norm), poisoned(&g, 2 * stride * 4));
        let p1 =
            EmbedParams { x_sorted: xs.ptr(), idx: im.ptr(), norm_w: nm.ptr(), parts: 2, stride: stride as u32, ..p };
        let ssq3 = poisoned(&g, 3 * 4);
        launch(&g, &g.k.embed, shapes::embed_decode(3), &EmbedParams { ssq_out: ssq3.ptr(), ..p1 });
        g.sync().unwrap();
        let partial: f64 = get::<f32>(&g, &ssq3, 3).iter().map(|&v| v as f64).sum();
        check(&[partial], &want_ss[..1], 1e-5, "embed sliced ssq");
        let all: Vec<f32> = get(&g, &xs, 2 * stride);
        let row0 = &table[toks[0] as usize * dim..][..dim];
        let want: Vec<f64> = (0..dim).map(|i| row0[i].to_f64() * norm[i].to_f64()).collect();
        for q in 0..2 {
            let got: Vec<f64> = (0..dim).map(|i| all[q * stride + idx[q * stride + i] as usize] as f64).collect();
            check(&got, &want, 1e-6, &format!("embed sorted copy {q}"));
            assert!(all[q * stride + dim..][..8].iter().all(|v| v.is_nan()), "embed wrote past copy {q}");
        }
        // Decode without act-order: the first q/k/v's half input (x · w / 16 in fp16), bit for bit.
        let hx = poisoned(&g, dim * 2);
        launch(&g, &g.k.embed, shapes::embed_decode(3), &EmbedParams { x16: hx.ptr(), norm_w: nm.ptr(), ..p });
        g.sync().unwrap();
        let got = get::<u16>(&g, &hx, dim);
        let want: Vec<u16> = (0..dim).map(|i| half_input(row0[i].to_f32() * norm[i].to_f32()).to_bits()).collect();
        assert_eq!(got, want, "embed half input");

        // rmsnorm_rows with a permutation, then with three (act-order q/k/v: one copy per part, a gap between the
        // copies and a padded permutation stride, which must stay unread and unwritten)
        let xs = rng.vec_f32(rows * dim, -3.0, 3.0);
        let w = rng.vec_f16(dim, 0.5, 1.5);
        let perm = shuffled(&mut rng, dim);
        let (xm, wm, pmm) = (put(&g, &xs), put(&g, &w), put(&g, &perm));
        let norm_rows = |perm: &[u32]| -> Vec<f64> {
            let mut want = Vec::new();
            for r in xs.chunks(dim) {
                let inv = 1.0 / (r.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64 + 1e-6).sqrt();
                want.extend(perm.iter().map(|&p| r[p as usize] as f64 * inv * w[p as usize].to_f64()));
            }
            want
        };
        let out = poisoned(&g, rows * dim * 2);
        let p = RmsNormParams {
            x: xm.ptr(),
            w: wm.ptr(),
            out: out.ptr(),
            perm: pmm.ptr(),
            dim: dim as u32,
            eps: 1e-6,
            out_cols: dim as u32,
            ..Default::default()
        };
        launch(&g, &g.k.rmsnorm_rows, shapes::per_row(rows as u32), &p);
        g.sync().unwrap();
        check(&f16s(&get::<u16>(&g, &out, rows * dim)), &norm_rows(&perm), 1e-3, "rmsnorm_rows");
        let perms: Vec<Vec<u32>> = (0..3).map(|_| shuffled(&mut rng, dim)).collect();
        let (perm_stride, out_stride) = (dim + 8, rows * dim + 16);
        let mut flat = vec![u32::MAX; 3 * perm_stride];
        for (i, p) in perms.iter().enumerate() {
            flat[i * perm_stride..][..dim].copy_from_slice(p);
        }
        let (pm3, out3) = (put(&g, &flat), poisoned(&g, 3 * out_stride * 2));
        let p = RmsNormParams {
            perm: pm3.ptr(),
            out: out3.ptr(),
            perm_stride: perm_stride as u32,
            out_stride: out_stride as u32,
            ..p
        };
        launch(&g, &g.k.rmsnorm_rows, shapes::per_row_parts(rows as u32, 3), &p);
        g.sync().unwrap();
        let all = get::<u16>(&g, &out3, 3 * out_stride);
        for (i, p) in perms.iter().enumerate() {
            let copy = &all[i * out_stride..][..out_stride];
            check(&f16s(&copy[..rows * dim]), &norm_rows(p), 1e-3, &format!("rmsnorm_rows part {i}"));
            assert!(copy[rows * dim..].iter().all(|&b| b == 0xFFFF), "rmsnorm_rows part {i} wrote past its rows");
        }
        // ... in the K order of the weights-in-registers tile, k_pad wide, with and without a permutation: the
        // same values (same arithmetic) at the columns `in_k_steps` says, zeros in the padding.
        let k_pad = dim.next_multiple_of(64);
        for (perm_ptr, order) in [(pmm.ptr(), perm.clone()), (DevPtr::NULL, (0..dim as u32).collect())] {
            let plain = poisoned(&g, rows * dim * 2);
            let steps = poisoned(&g, rows * k_pad * 2);
            let base = RmsNormParams { perm: perm_ptr, perm_stride: 0, out_stride: 0, ..p };
            launch(&g, &g.k.rmsnorm_rows, shapes::per_row(rows as u32), &RmsNormParams { out: plain.ptr(), ..base });
            let ks = RmsNormParams { out: steps.ptr(), out_cols: k_pad as u32, order: 1, ..base };
            launch(&g, &g.k.rmsnorm_rows, shapes::per_row(rows as u32), &ks);
            g.sync().unwrap();
            let plain: Vec<u16> = get(&g, &plain, rows * dim);
            check(&f16s(&plain), &norm_rows(&order), 1e-3, "rmsnorm_rows in order");
            let what = format!("rmsnorm_rows k_steps perm={}", !perm_ptr.is_null());
            assert_eq!(get::<u16>(&g, &steps, rows * k_pad), in_k_steps(&plain, rows, dim), "{what}");
            // ... and as the GEMV-shaped tile's fragments (blocks of 16 rows): the same values where
            // `frag16_sources` puts them, zeros past dim, the rows past the chunk's never written.
            let k_pad128 = dim.next_multiple_of(128);
            let len = rows.div_ceil(16) * 16 * k_pad128;
            let frags = poisoned(&g, len * 2);
            let fp = RmsNormParams { out: frags.ptr(), out_cols: k_pad128 as u32, order: 2, ..base };
            launch(&g, &g.k.rmsnorm_rows, shapes::per_row(rows as u32), &fp);
            g.sync().unwrap();
            let want: Vec<u16> = frag16_sources(k_pad128, rows)
                .iter()
                .map(|&(r, c)| {
                    if r >= rows {
                        0xFFFF
                    } else if c < dim {
                        plain[r * dim + c]
                    } else {
                        0
                    }
                })
                .collect();
            let what = format!("rmsnorm_rows frag16 perm={}", !perm_ptr.is_null());
            assert_eq!(get::<u16>(&g, &frags, len), want, "{what}");
        }

        // permute_cols
        let a = rng.vec_f16(rows * dim, -1.0, 1.0);
        let am = put(&g, &a);
        let out = poisoned(&g, rows * dim * 2);
        let p = PermuteParams { input: am.ptr(), out: out.ptr(), perm: pmm.ptr(), cols: dim as u32 };
        launch(&g, &g.k.permute_cols, shapes::permute(rows as u32), &p);
        g.sync().unwrap();
        let want: Vec<f64> =
            a.chunks(dim).flat_map(|r| perm.iter().map(|&p| r[p as usize].to_f64()).collect::<Vec<_>>()).collect();
        check(&f16s(&get::<u16>(&g, &out, rows * dim)), &want, 0.0, "permute_cols");

        // swiglu_rows with a permutation (per column) and without (8 columns per thread where dim allows)
        let gu = rng.vec_f16(rows * 2 * dim, -3.0, 3.0);
        let gm = put(&g, &gu);
        let identity: Vec<u32> = (0..dim as u32).collect();
        for (pm_ptr, order) in [(pmm.ptr(), &perm), (DevPtr::NULL, &identity)] {
            let out = poisoned(&g, rows * dim * 2);
            let p = SwigluParams {
                gu: gm.ptr(),
                h: out.ptr(),
                perm: pm_ptr,
                inter: dim as u32,
                ldh: dim as u32,
                k_steps: 0,
            };
            launch(&g, &g.k.swiglu_rows, shapes::swiglu(rows as u32, dim as u32), &p);
            // The same in the K order of the weights-in-registers tile (k_pad wide): the same bits rearranged.
            let steps = poisoned(&g, rows * k_pad * 2);
            let ks = SwigluParams { h: steps.ptr(), ldh: k_pad as u32, k_steps: 1, ..p };
            launch(&g, &g.k.swiglu_rows, shapes::swiglu(rows as u32, dim as u32), &ks);
            g.sync().unwrap();
            let plain: Vec<u16> = get(&g, &out, rows * dim);
            let what = format!("swiglu_rows k_steps dim={dim} perm={}", !pm_ptr.is_null());
            assert_eq!(get::<u16>(&g, &steps, rows * k_pad), in_k_steps(&plain, rows, dim), "{what}");
            let mut want = Vec::new();
            for r in gu.chunks(2 * dim) {
                want.extend(order.iter().map(|&p| {
                    let (a, b) = (r[p as usize].to_f64(), r[dim + p as usize].to_f64());
                    a / (1.0 + (-a).exp()) * b
                }));
            }
            let what = format!("swiglu_rows dim={dim} perm={}", !pm_ptr.is_null());
            check(&f16s(&get::<u16>(&g, &out, rows * dim)), &want, 2e-3, &what);
        }
    }
}

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn rope_kv_rows_matches_f64() {
    let g = gpu();
    let mut rng = Rng(51);
    for &(heads, kv_heads, hd, rows) in
        &[(4usize, 4usize, 16usize, 3usize), (2, 1, 8, 5), (8, 2, 64, 9), (32, 32, 128, 20)]
    {
        let (q_dim, kv_dim, ctx) = (heads * hd, kv_heads * hd, 64usize);
        let pos0 = 40u32;
        let qkv = rng.vec_f16(rows * (q_dim + 2 * kv_dim), -2.0, 2.0);
        let setup = RopeSetup::new(&g, (heads, kv_heads, hd), ctx, 128, pos0);
        let qm = put(&g, &qkv);
        // The production grid, and one block per row (the kernel strides over heads for any grid.y).
        let production = shapes::rope(rows as u32, heads, kv_heads, hd);
        for l in [production, Launch { grid: (rows as u32, 1, 1), ..production }] {
            let q = poisoned(&g, rows * q_dim * 2);
            let kc = poisoned(&g, kv_heads * ctx * hd * 2);
            let vc = poisoned(&g, kv_heads * ctx * hd * 2);
            let p = setup.params(&qm, &q, &kc, &vc);
            launch(&g, &g.k.rope_kv_rows, l, &p);
            g.sync().unwrap();
            let width = q_dim + 2 * kv_dim;
            let rot = |v: &[f64], pos: usize| rope_f64(v, hd, pos as u32);
            let (mut wq, mut wk, mut wv) = (Vec::new(), Vec::new(), Vec::new());
            let (gk, gv) =
                (f16s(&get::<u16>(&g, &kc, kv_heads * ctx * hd)), f16s(&get::<u16>(&g, &vc, kv_heads * ctx * hd)));
            let (mut gotk, mut gotv) = (Vec::new(), Vec::new());
            for r in 0..rows {
                let row: Vec<f64> = qkv[r * width..][..width].iter().map(|v| v.to_f64()).collect();
                let pos = pos0 as usize + r;
                wq.extend(rot(&row[..q_dim], pos));
                wk.extend(rot(&row[q_dim..q_dim + kv_dim], pos));
                wv.extend_from_slice(&row[q_dim + kv_dim..]);
                for h in 0..kv_heads {
                    gotk.extend_from_slice(&gk[(h * ctx + pos) * hd..][..hd]);
                    gotv.extend_from_slice(&gv[(h * ctx + pos) * hd..][..hd]);
                }
            }
            check(&f16s(&get::<u16>(&g, &q, rows * q_dim)), &wq, 2e-3, "rope q");
            check(&gotk, &wk, 2e-3, "rope k");
            check(&gotv, &wv, 0.0, "rope v");
        }
    }
}

#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn lm_head_logits_and_argmax_match() {
    let g = gpu();
    let mut rng = Rng(61);
    // 32 rows per block (one pass of the block's warps) and 96 (three: Tuning::lm_head_passes); K past 8192 takes
    // the half input's second round of loads. Each shape from the f32 row (prefill) and from the half input (decode).
    for &(vocab, k, rows_per_block) in
        &[(100usize, 64usize, 32usize), (1000, 200, 32), (1000, 200, 96), (300, 8200, 64), (64000, 4096, 32)]
    {
        let w = rng.vec_f16(vocab * k, -0.05, 0.05);
        let x = rng.vec_f32(k, -3.0, 3.0);
        let nw = rng.vec_f16(k, 0.5, 1.5);
        let ssq = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
        let inv = 1.0 / (ssq / k as f64 + 1e-6).sqrt();
        // The half input with its sum of squares in 3 partials, as the residual epilogue leaves them.
        let x16 = half_inputs(&x, &nw);
        let thirds: Vec<f32> = x.chunks(k.div_ceil(3)).map(|c| c.iter().map(|&v| v * v).sum()).collect();
        let (wm, xm, nm, x16m, ssqm) = (put(&g, &w), put(&g, &x), put(&g, &nw), put(&g, &x16), put(&g, &thirds));
        let logits = poisoned(&g, vocab * 4);
        let blocks = vocab.div_ceil(rows_per_block);
        let (pv, pi) = (g.alloc(blocks * 4, "t").unwrap(), g.alloc(blocks * 4, "t").unwrap());
        let counter = put(&g, &[0u32]);
        let tok = poisoned(&g, 4);
        let p = LmHeadParams {
            w: wm.ptr(),
            x: xm.ptr(),
            norm_w: nm.ptr(),
            x16: DevPtr::NULL,
            ssq: DevPtr::NULL,
            logits: logits.ptr(),
            part_val: pv.ptr(),
            part_idx: pi.ptr(),
            counter: counter.ptr(),
            token_out: tok.ptr(),
            vocab: vocab as u32,
            k: k as u32,
            rows_per_block: rows_per_block as u32,
            n_ssq: 0,
            eps: 1e-6,
            ..Default::default()
        };
        let half =
            LmHeadParams { x: DevPtr::NULL, norm_w: DevPtr::NULL, x16: x16m.ptr(), ssq: ssqm.ptr(), n_ssq: 3, ..p };
        // What each input means in float64: the row normalized, or the half input's own fp16 values unscaled.
        let row_xn: Vec<f64> = x.iter().zip(&nw).map(|(&a, b)| a as f64 * inv * b.to_f64()).collect();
        let half_xn: Vec<f64> = x16.iter().map(|h| h.to_f64() / shapes::HALF_INPUT_SCALE as f64 * inv).collect();
        for (what, p, xn) in [("row", &p, &row_xn), ("half input", &half, &half_xn)] {
            let want: Vec<f64> = (0..vocab).map(|r| (0..k).map(|i| w[r * k + i].to_f64() * xn[i]).sum()).collect();
            for _ in 0..2 {
                set(&g, &logits, &vec![f32::NAN; vocab]);
                launch(&g, &g.k.lm_head, Launch::new((blocks as u32, 1, 1), 256, k as u32 * 4), p);
                g.sync().unwrap();
                let got: Vec<f32> = get(&g, &logits, vocab);
                check(
                    &got.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                    &want,
                    1e-5,
                    &format!("lm_head from the {what}, vocab={vocab} k={k} rows/block={rows_per_block}"),
                );
                let best = crate::sampling::argmax(&got);
                assert_eq!(get::<u32>(&g, &tok, 1)[0], best, "lm_head argmax from the {what}, vocab={vocab}");
                assert_eq!(get::<u32>(&g, &counter, 1)[0], 0, "argmax counter not reset");
            }
        }
    }
}

/// The greedy screen (`lm_head_screen_pack`, `lm_head_screen`, `lm_head_exact`) against `lm_head_f16` on the same
/// input (the decode step's half input, and a prefill row): the same token every time, including rows that tie the
/// best exactly or within an ulp, rows with a NaN or an infinite weight, and an input of zeros (every row a
/// candidate). Also: the int8 copy keeps every weight within half a scale of its value and |w| ≤ 127 · scale (what
/// the screen's bound rests on); every row's upper bound covers lm_head_f16's logit; the screen rules out most rows
/// of random weights (so it is not computing the whole head twice); the counters are back at zero; two runs give the
/// same token.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn lm_head_screen_picks_the_full_heads_token() {
    use engine_format::plan::LM_HEAD_SCREEN_GROUP;
    let g = gpu();
    let mut rng = Rng(67);
    // K of one partial group (80), of a partial last group (208), the 7B's, and past the half input's first round.
    for &(vocab, k, case) in &[
        (1000usize, 80usize, "plain"),
        (3000, 208, "plain"),
        (64000, 4096, "plain"),
        (500, 8208, "plain"),
        (5000, 4096, "ties"),
        (5000, 4096, "nan"),
        (5000, 4096, "inf"),
        (2000, 256, "zeros"),
    ] {
        let what = format!("vocab={vocab} k={k} {case}");
        let mut w = rng.vec_f16(vocab * k, -0.05, 0.05);
        let mut x = rng.vec_f32(k, -3.0, 3.0);
        let nw = rng.vec_f16(k, 0.5, 1.5);
        if case == "zeros" {
            x.iter_mut().for_each(|v| *v = 0.0);
        }
        let x16 = half_inputs(&x, &nw);
        // The row the full head picks, found on the host from the same fp16 input (close enough to aim at).
        let xn: Vec<f64> = x16.iter().map(|h| h.to_f64()).collect();
        let logit = |w: &[f16], r: usize| (0..k).map(|i| w[r * k + i].to_f64() * xn[i]).sum::<f64>();
        let best = (0..vocab).max_by(|&a, &b| logit(&w, a).total_cmp(&logit(&w, b))).unwrap();
        match case {
            // Exact copies of the best row (the smaller id must win) and copies one ulp off in one weight.
            "ties" => {
                for (n, r) in [17usize, 4000, 4999, 2500].into_iter().enumerate() {
                    let row: Vec<f16> = w[best * k..(best + 1) * k].to_vec();
                    w[r * k..(r + 1) * k].copy_from_slice(&row);
                    if n >= 2 {
                        let e = &mut w[r * k + n];
                        *e = f16::from_bits(e.to_bits() + 1);
                    }
                }
            }
            // A NaN in the best row (never chosen), and one in another.
            "nan" => {
                w[best * k + 3] = f16::NAN;
                w[7 * k + 100] = f16::NAN;
            }
            // +inf where the input is positive: that row's logit is +inf and wins.
            "inf" => {
                let i = xn.iter().position(|&v| v > 0.0).unwrap();
                w[123 * k + i] = f16::INFINITY;
            }
            _ => {}
        }
        let ssq: Vec<f32> = x.chunks(k.div_ceil(3)).map(|c| c.iter().map(|&v| v * v).sum()).collect();
        let (wm, x16m, ssqm) = (put(&g, &w), put(&g, &x16), put(&g, &ssq));
        let groups = k.div_ceil(LM_HEAD_SCREEN_GROUP);
        let (qm, scm) = (poisoned(&g, vocab * k), poisoned(&g, vocab * groups * 2));
        let pack =
            HeadScreenPackParams { w: wm.ptr(), q: qm.ptr(), scales: scm.ptr(), vocab: vocab as u32, k: k as u32 };
        launch(&g, &g.k.lm_head_screen_pack, shapes::lm_head_screen_pack(vocab as u32, k as u32), &pack);
        g.sync().unwrap();
        let q: Vec<u8> = get(&g, &qm, vocab * k);
        let scales: Vec<f16> = get(&g, &scm, vocab * groups);
        for r in 0..vocab {
            for i in 0..k {
                let (wv, s) = (w[r * k + i].to_f64(), scales[r * groups + i / LM_HEAD_SCREEN_GROUP].to_f64());
                if !wv.is_finite() || !s.is_finite() {
                    assert!(s.is_infinite() && q[r * k + i] == 128, "{what}: row {r} col {i}: a non-finite group");
                    continue;
                }
                let qv = q[r * k + i] as f64 - 128.0;
                assert!(qv.abs() <= 127.0 && wv.abs() <= 127.0 * s, "{what}: row {r} col {i}: |w| past 127 scales");
                assert!((wv - qv * s).abs() <= s / 2.0, "{what}: row {r} col {i}: {wv} is not within s/2 of {qv}·{s}");
            }
        }

        let rows_per_block = 64usize;
        let blocks = vocab.div_ceil(32);
        let (pv, pi) = (g.alloc(blocks * 4, "t").unwrap(), g.alloc(blocks * 4, "t").unwrap());
        let (counter, smax) = (put(&g, &[0u32]), put(&g, &[0u32]));
        let (logits, hi, tok) = (poisoned(&g, vocab * 4), poisoned(&g, vocab * 4), poisoned(&g, 4));
        let p = LmHeadParams {
            w: wm.ptr(),
            x16: x16m.ptr(),
            ssq: ssqm.ptr(),
            logits: logits.ptr(),
            part_val: pv.ptr(),
            part_idx: pi.ptr(),
            counter: counter.ptr(),
            token_out: tok.ptr(),
            screen_q: qm.ptr(),
            screen_scales: scm.ptr(),
            screen_hi: hi.ptr(),
            screen_max: smax.ptr(),
            vocab: vocab as u32,
            k: k as u32,
            rows_per_block: rows_per_block as u32,
            n_ssq: 3,
            eps: 1e-6,
            ..Default::default()
        };
        // The same from a prefill row (the f32 residual stream and the norm weight): the first token's head.
        let (xm, nm) = (put(&g, &x), put(&g, &nw));
        let row_p = LmHeadParams { x: xm.ptr(), norm_w: nm.ptr(), x16: DevPtr::NULL, ssq: DevPtr::NULL, n_ssq: 0, ..p };
        for (input, p) in [("half input", &p), ("row", &row_p)] {
            let full = Launch::new(vocab.div_ceil(rows_per_block) as u32, 256, k as u32 * 4);
            launch(&g, &g.k.lm_head, full, p);
            g.sync().unwrap();
            let want = get::<u32>(&g, &tok, 1)[0];
            let full_logits: Vec<f32> = get(&g, &logits, vocab);
            assert_eq!(want, crate::sampling::argmax(&full_logits), "{what} from the {input}: the full head's argmax");
            if case == "ties" {
                // The exact copies tie the best row bit for bit (the smaller id wins); the ulp-off ones may pass it.
                for r in [17usize, 4000] {
                    assert_eq!(
                        full_logits[r].to_bits(),
                        full_logits[best].to_bits(),
                        "{what} from the {input}: row {r} copies row {best}"
                    );
                }
                let w_id = want as usize;
                assert!(w_id == best.min(17) || [2500, 4999].contains(&w_id), "{what} from the {input}: picked {want}");
            }
            for run in 0..2 {
                set(&g, &tok, &[u32::MAX]);
                set(&g, &hi, &vec![f32::NAN; vocab]);
                launch(
                    &g,
                    &g.k.lm_head_screen,
                    shapes::lm_head_screen(vocab as u32, k as u32, rows_per_block as u32),
                    p,
                );
                launch(&g, &g.k.lm_head_exact, shapes::lm_head_exact(vocab as u32, k as u32), p);
                g.sync().unwrap();
                assert_eq!(
                    get::<u32>(&g, &tok, 1)[0],
                    want,
                    "{what} from the {input}: run {run}: the screen's token against the full head's"
                );
                assert_eq!(get::<u32>(&g, &counter, 1)[0], 0, "{what} from the {input}: argmax counter not reset");
                assert_eq!(get::<u32>(&g, &smax, 1)[0], 0, "{what} from the {input}: screen max not reset");
            }
            // Every finite logit under its row's upper bound; the rows left to compute are few where the data is
            // random.
            let his: Vec<f32> = get(&g, &hi, vocab);
            for (r, (&h, &l)) in his.iter().zip(&full_logits).enumerate() {
                assert!(
                    !l.is_finite() || h.is_nan() || h >= l,
                    "{what} from the {input}: row {r}: bound {h} under the logit {l}"
                );
            }
            let lo_best = his
                .iter()
                .zip(&full_logits)
                .filter(|(h, l)| h.is_finite() && l.is_finite())
                .map(|(&h, &l)| 2.0 * l - h) // ~ the row's lower bound (the bound is symmetric about the screen's value)
                .fold(f32::NEG_INFINITY, f32::max);
            let left = his.iter().filter(|&&h| h.is_nan() || h >= lo_best).count();
            eprintln!("{what} from the {input}: about {left} of {vocab} rows left to the exact pass");
            if case == "plain" && vocab >= 3000 {
                assert!(left * 10 < vocab, "{what} from the {input}: the screen left {left} of {vocab} rows");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Scoring (perplexity)

/// `score_tile` + `score_reduce` against float64: the negative log-likelihood of each row's target under the logits
/// A · Wᵀ, for row counts around the 64-row tile (1, 5, 64, 100, 130), vocabularies that are and are not a
/// multiple of the 64-column tile, K of one step, of a partial step (200) and of 4096; rows without a target keep
/// their poisoned output; two runs give the same bits.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn score_matches_f64() {
    let g = gpu();
    let mut rng = Rng(81);
    for &(m, k, vocab) in
        &[(1usize, 64usize, 1000usize), (5, 200, 2051), (64, 4096, 1000), (100, 200, 64 * 17), (130, 4096, 2051)]
    {
        let a = rng.vec_f16(m * k, -1.0, 1.0);
        let w = rng.vec_f16(vocab * k, -0.3, 0.3);
        // Every third row has no target (an id outside the vocabulary).
        let targets: Vec<u32> =
            (0..m).map(|r| if r % 3 == 2 { u32::MAX } else { rng.below(vocab as u64) as u32 }).collect();
        let n_tiles = vocab.div_ceil(64);
        let (am, wm, tm) = (put(&g, &a), put(&g, &w), put(&g, &targets));
        let part = poisoned(&g, m * n_tiles * 2 * 4);
        let (tl, nll) = (poisoned(&g, m * 4), poisoned(&g, m * 4));
        let p = ScoreParams {
            a: am.ptr(),
            w: wm.ptr(),
            targets: tm.ptr(),
            part: part.ptr(),
            target_logit: tl.ptr(),
            nll: nll.ptr(),
            m: m as u32,
            k: k as u32,
            lda: k as u32,
            vocab: vocab as u32,
            n_tiles: n_tiles as u32,
        };
        let what = format!("score m={m} k={k} vocab={vocab}");
        let mut first: Option<Vec<u32>> = None;
        for run in 0..2 {
            set(&g, &nll, &vec![0xFFu8; m * 4]);
            launch(&g, &g.k.score_tile, shapes::score_tile(vocab as u32, m as u32), &p);
            launch(&g, &g.k.score_reduce, shapes::score_reduce(m as u32), &p);
            g.sync().unwrap();
            let bits: Vec<u32> = get(&g, &nll, m);
            for r in 0..m {
                let got = f32::from_bits(bits[r]) as f64;
                if targets[r] == u32::MAX {
                    assert!(bits[r] == u32::MAX, "{what}: row {r} has no target but was written");
                    continue;
                }
                let logits: Vec<f64> = (0..vocab)
                    .map(|v| (0..k).map(|i| a[r * k + i].to_f64() * w[v * k + i].to_f64()).sum::<f64>())
                    .collect();
                let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
                let want = lse - logits[targets[r] as usize];
                assert!((got - want).abs() <= 1e-3 * want.abs().max(1.0), "{what} run {run} row {r}: {got} vs {want}");
            }
            match &first {
                None => first = Some(bits),
                Some(b) => assert!(b == &bits, "{what}: the second run differs from the first"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The sampler

/// `sample_token` over fixed logits: `n` draws at positions `pos0 + 1 ..= pos0 + n` (one launch each, every
/// launch writing its own token slot, whose initial value u32::MAX marks nothing), after loading `case`'s settings
/// and the penalty set of its history. Returns the tokens and the penalty set as the kernel left it.
fn device_draws(g: &Device, logits: &[f32], history: &[u32], params: &SamplerParams, n: usize) -> (Vec<u32>, Vec<u32>) {
    let vocab = logits.len();
    let mut seen = vec![0u32; vocab.div_ceil(32)];
    if params.repetition_penalty != 1.0 {
        for &t in history.iter().filter(|&&t| (t as usize) < vocab) {
            seen[t as usize / 32] |= 1 << (t % 32);
        }
    }
    let config = SamplerConfig::new(params);
    let (lm, cm, sm, pm) = (put(g, logits), put(g, &[config]), put(g, &seen), put(g, &[0u32]));
    let tokens = put(g, &vec![u32::MAX; n]);
    for i in 0..n {
        let p = SampleParams {
            logits: lm.ptr(),
            config: cm.ptr(),
            seen: sm.ptr(),
            token: tokens.ptr::<u32>().add(i),
            pos: pm.ptr(),
            vocab: vocab as u32,
            pos_offset: i as u32 + 1,
        };
        launch(g, &g.k.sample, shapes::sample(), &p);
    }
    g.sync().unwrap();
    (get(g, &tokens, n), get(g, &sm, seen.len()))
}

/// The device sampler draws from the exact distribution of every setting of the distribution test (the CPU
/// sampler's test cases: each setting and the edge cases — top-k 1, top-p below the top token's mass, temperatures
/// of 1e-3 and 100, ties at the top-k and top-p boundaries, -inf logits, vocabularies of 2051 and 4099 — and one
/// of 64000), checked by chi-square over 10000 draws; it picks the CPU sampler's token at the same positions
/// (the same rules and arithmetic; only the two libraries' exp may round a boundary differently); and two runs give
/// the same tokens.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn sample_token_draws_the_exact_distribution_and_the_cpu_samplers_tokens() {
    use crate::sampling::{distribution_test, probabilities, Sampler};
    let g = gpu();
    let mut cases = distribution_test::cases();
    let mut rng = Rng(71);
    cases.push(distribution_test::Case {
        name: "temperature 0.7, top-k 40, top-p 0.9, vocab 64000",
        logits: rng
            .vec_f32(64000, -4.0, 4.0)
            .into_iter()
            .enumerate()
            .map(|(i, l)| if i % 97 == 0 { l + 6.0 } else { l })
            .collect(),
        history: vec![],
        params: SamplerParams { temperature: 0.7, top_k: 40, top_p: 0.9, seed: 99, ..Default::default() },
    });
    for case in &cases {
        let n = 10000;
        let (tokens, _) = device_draws(&g, &case.logits, &case.history, &case.params, n);
        let (again, _) = device_draws(&g, &case.logits, &case.history, &case.params, n);
        assert!(tokens == again, "{}: two runs give different tokens", case.name);
        let vocab = case.logits.len();
        let mut counts = vec![0u64; vocab];
        for &t in &tokens {
            assert!((t as usize) < vocab, "{}: token {t} outside the vocabulary", case.name);
            counts[t as usize] += 1;
        }
        let probs = probabilities(&case.logits, &case.history, &case.params);
        distribution_test::check(case.name, &counts, &probs).unwrap();
        let mut cpu = Sampler::new(case.params).unwrap();
        let differ =
            (0..n).filter(|&i| cpu.sample(&mut case.logits.clone(), &case.history, i + 1) != tokens[i]).count();
        assert!(differ * 1000 <= n, "{}: {differ} of {n} draws differ from the CPU sampler's", case.name);
        println!("{:<55} chi-square ok; {differ} of {n} draws differ from the CPU's", case.name);
    }
}

/// With a penalty the kernel adds the token it was fed to the penalty set (and without one leaves the set alone),
/// and the penalty then applies to it: greedy with a penalty of 1e6 never picks a fed token again.
#[test]
#[ignore = "needs a GPU: run through tests/gpu/suite.sh"]
fn sample_token_adds_the_fed_token_to_the_penalty_set() {
    let g = gpu();
    let logits: Vec<f32> = (0..300).map(|i| if i == 77 { 9.0 } else { (i % 7) as f32 }).collect();
    let params = SamplerParams { repetition_penalty: 1e6, ..Default::default() };
    let config = SamplerConfig { penalty: 1e6, top_p: 1.0, ..Default::default() };
    let (lm, cm, pm) = (put(&g, &logits), put(&g, &[config]), put(&g, &[0u32]));
    let seen = put(&g, &[0u32; 10]);
    let token = put(&g, &[77u32]);
    let p = SampleParams {
        logits: lm.ptr(),
        config: cm.ptr(),
        seen: seen.ptr(),
        token: token.ptr(),
        pos: pm.ptr(),
        vocab: 300,
        pos_offset: 1,
    };
    launch(&g, &g.k.sample, shapes::sample(), &p);
    g.sync().unwrap();
    let bits: Vec<u32> = get(&g, &seen, 10);
    assert_eq!(bits[77 / 32], 1 << (77 % 32), "token 77 not added to the penalty set");
    let picked = get::<u32>(&g, &token, 1)[0];
    let want = crate::sampling::probabilities(&logits, &[77], &params);
    assert_eq!(want[picked as usize], 1.0, "picked {picked}");
    assert_ne!(picked, 77);
    // No penalty: the set is left alone.
    set(&g, &seen, &[0u32; 10]);
    set(&g, &token, &[77u32]);
    set(&g, &cm, &[SamplerConfig { penalty: 1.0, ..config }]);
    launch(&g, &g.k.sample, shapes::sample(), &p);
    g.sync().unwrap();
    assert!(get::<u32>(&g, &seen, 10).iter().all(|&b| b == 0), "marked without a penalty");
    assert_eq!(get::<u32>(&g, &token, 1)[0], 77, "greedy without a penalty picks the largest logit");
}

/// Per-launch time of `sample_token` over 64000 logits under the settings of the sampling table (100 launches back
/// to back between two events, median of 5), on two kinds of logits: flat (a random model's: most of the
/// vocabulary inside top-p 0.9) and peaked (a trained model's: a few dozen tokens hold the mass).
#[test]
#[ignore = "needs a GPU: a measurement, run by hand (--nocapture)"]
fn sample_token_time_per_launch() {
    let g = gpu();
    let mut rng = Rng(5);
    let flat = rng.vec_f32(64000, -2.0, 2.0);
    let peaked: Vec<f32> = flat.iter().enumerate().map(|(i, &l)| if i % 1000 == 0 { l + 12.0 } else { l }).collect();
    let settings = [
        ("greedy + penalty 1.1", SamplerParams { repetition_penalty: 1.1, ..Default::default() }),
        ("temperature 0.7, top-p 0.9", SamplerParams { temperature: 0.7, top_p: 0.9, ..Default::default() }),
        (
            "temperature 0.7, top-p 0.9, penalty 1.1",
            SamplerParams { temperature: 0.7, top_p: 0.9, repetition_penalty: 1.1, ..Default::default() },
        ),
        ("temperature 0.8, top-k 40", SamplerParams { temperature: 0.8, top_k: 40, ..Default::default() }),
        ("temperature 0.7, min-p 0.05", SamplerParams { temperature: 0.7, min_p: 0.05, ..Default::default() }),
    ];
    for (kind, logits) in [("flat", &flat), ("peaked", &peaked)] {
        for (name, params) in &settings {
            let config = SamplerConfig::new(params);
            let (lm, cm, sm, pm, tm) =
                (put(&g, logits), put(&g, &[config]), put(&g, &[0u32; 2000]), put(&g, &[0u32]), put(&g, &[0u32]));
            let p = SampleParams {
                logits: lm.ptr(),
                config: cm.ptr(),
                seen: sm.ptr(),
                token: tm.ptr(),
                pos: pm.ptr(),
                vocab: 64000,
                pos_offset: 1,
            };
            let mut times = Vec::new();
            for rep in 0..6 {
                let (a, b) = (g.event(true).unwrap(), g.event(true).unwrap());
                g.record(&a).unwrap();
                for _ in 0..100 {
                    launch(&g, &g.k.sample, shapes::sample(), &p);
                }
                g.record(&b).unwrap();
                g.sync().unwrap();
                if rep > 0 {
                    times.push(a.elapsed_ms(&b).unwrap() as f64 * 10.0);
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            println!("sample_token {kind:6} {name:42} {:7.1} µs", times[times.len() / 2]);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Measurement (prints, asserts only that it ran): where a decode GEMV's time goes.

/// Per-launch time of the GEMV `f` over distinct copies of one weight matrix (256 MB of them, so that nothing is
/// served from L2 that a decode step would read from memory), launched back to back 64 times between two events;
/// median of 5.
fn time_gemv_chain(g: &Device, s: GemvStream, f: &Kernel<GemvParams>, dl: &DevLin, p: &GemvParams, grid: u32) -> f64 {
    let bytes = dl.d.qw.len() * 4;
    let copies = (256usize << 20).div_ceil(bytes).clamp(1, 64);
    let pool: Vec<DeviceBuffer> = (0..copies).map(|_| put(g, &dl.d.qw)).collect();
    let shape = gemv_launch(s, grid, 8, dl.p.k_pad, 1, dl.d.format);
    time_per_launch(g, &|i| {
        let q = GemvParams { qw: pool[i % copies].ptr(), ..*p };
        launch(g, f, shape, &q);
    })
}

#[test]
#[ignore = "needs a GPU: a measurement, run by hand (--nocapture)"]
fn gemv_int4_time_per_launch() {
    let g = gpu();
    for s in streams(&g) {
        let gk = g.k.gemvs(s);
        let mut rng = Rng(99);
        for &(k, n) in &[(4096usize, 4096usize), (4096, 12288), (4096, 22016), (11008, 4096), (4096, 65536)] {
            let lin = RandLinear::new(&mut rng, k, n, Some(128), false, true);
            let dl = upload_linear(&g, lin.repack(ColumnOrder::Identity));
            let x = rng.vec_f32(k, -1.0, 1.0);
            let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let w = rng.vec_f16(k, 0.5, 1.5);
            let ss: f32 = x.iter().map(|v| v * v).sum();
            let parts = vec![ss / 256.0; 256];
            let (xm, x16m, wm, sm) = (put(&g, &x), put(&g, &x16), put(&g, &w), put(&g, &parts));
            let y = poisoned(&g, n * 4);
            let bytes = (dl.d.qw.len() * 4 + dl.d.sz.len() * 4) as f64;
            for per_sm in [4u32, 6, 8, 12, 16] {
                let (grid, tpb) = shapes::gemv_grid(dl.d.tiles() as u32, g.limits.sm_count, per_sm);
                for (name, f) in
                    [("plain", gk.store.of(TileFormat::Int4)), ("norm", gk.norm_store.of(TileFormat::Int4))]
                {
                    let p = GemvParams {
                        x16: x16m.ptr(),
                        x: xm.ptr(),
                        norm_w: wm.ptr(),
                        ssq: sm.ptr(),
                        n_ssq: 256,
                        y: y.ptr(),
                        tiles_per_block: tpb,
                        ..dl.p
                    };
                    let us = time_gemv_chain(&g, s, f, &dl, &p, grid);
                    println!(
                    "gemv {s:?} {name:5} K={k:5} N={n:5} blocks/SM {per_sm:2} (grid {grid:4} × {tpb} tiles): {us:7.2} µs {:6.0} GB/s",
                    bytes / us / 1e3
                );
                }
            }
        }
    }
}

/// The floor of a decode step made of separate kernels: `read_bytes_bw` (a pure read, nothing to compute) over the
/// byte counts of the 7B layer's four GEMVs (q/k/v 25.2 MB, o 8.4, gate/up 45.1, down 22.5: their int4 words),
/// launched back to back over distinct buffers as a step launches them, 32 layers between two events; against one
/// launch over the same total. The difference is what kernel boundaries cost a stream that does nothing else;
/// the GEMVs' time above it is their own. Grids of 1, 2 and 4 blocks of 256 threads per SM; median of 5.
#[test]
#[ignore = "needs a GPU: a measurement, run by hand (--nocapture)"]
fn read_chain_time_per_step() {
    let g = gpu();
    let layer: [usize; 4] = [4096 * 12288 / 2, 4096 * 4096 / 2, 4096 * 22016 / 2, 11008 * 4096 / 2];
    let total: usize = 32 * layer.iter().sum::<usize>();
    let src = poisoned(&g, total);
    let sink = g.alloc(4 * 256 * g.limits.sm_count as usize * 4, "t").unwrap();
    let time = |launches: &[(usize, usize)], per_sm: u32| -> f64 {
        let l = Launch::new(per_sm * g.limits.sm_count, 256, 0);
        let mut times = Vec::new();
        for rep in 0..6 {
            let (a, b) = (g.event(true).unwrap(), g.event(true).unwrap());
            a.record(&g.stream).unwrap();
            for &(at, bytes) in launches {
                let (src, n16) = (src.ptr::<u8>().add(at).cast(), (bytes / 16) as u64);
                let p = ReadParams { src, sink: sink.ptr(), n16, never: 0x5EED_F00D };
                launch(&g, &g.k.read_bw, l, &p);
            }
            b.record(&g.stream).unwrap();
            g.sync().unwrap();
            if rep > 0 {
                times.push(a.elapsed_ms(&b).unwrap() as f64 * 1e3);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        times[times.len() / 2]
    };
    let mut chain = Vec::new();
    let mut at = 0;
    for _ in 0..32 {
        for &bytes in &layer {
            chain.push((at, bytes));
            at += bytes;
        }
    }
    for per_sm in [1u32, 2, 4] {
        let (one, many) = (time(&[(0, total)], per_sm), time(&chain, per_sm));
        println!(
            "read {:.2} GB, {per_sm} blocks/SM: one launch {one:8.1} µs ({:6.0} GB/s); 128 launches {many:8.1} µs \
             ({:6.0} GB/s): {:5.2} µs per boundary",
            total as f64 / 1e9,
            total as f64 / one / 1e3,
            total as f64 / many / 1e3,
            (many - one) / 128.0
        );
    }
}

/// Host-side cost of loading: repacking every linear of a real-sized checkpoint (ENGINE_REPACK_MODEL=DIR).
#[test]
#[ignore = "a measurement, run by hand with ENGINE_REPACK_MODEL set"]
fn repack_time_of_a_checkpoint() {
    let dir = std::env::var_os("ENGINE_REPACK_MODEL")
        .expect("set ENGINE_REPACK_MODEL to a checkpoint directory (e.g. one from `engine-cli synth --preset 7b`)");
    let t0 = std::time::Instant::now();
    let model = crate::model::Model::open(std::path::Path::new(&dir)).unwrap();
    let c = &model.desc.config;
    println!("open {:.3} s", t0.elapsed().as_secs_f64());
    let q_dim = c.num_attention_heads * c.head_dim;
    for pass in 0..2 {
        let (mut t_qkv, mut t_o, mut t_gu, mut t_down, mut bytes) = (0f64, 0f64, 0f64, 0f64, 0usize);
        let mut sink = 0u32;
        let mut spare = Vec::new();
        for layer in &model.desc.layers {
            let mut time =
                |parts: &[&engine_format::Linear], order, acc: &mut f64, bytes: &mut usize, sink: &mut u32| {
                    let t = std::time::Instant::now();
                    let d = layout::repack_linear_in(&model, parts, order, "t", std::mem::take(&mut spare)).unwrap();
                    *acc += t.elapsed().as_secs_f64();
                    *bytes += d.qw.len() * 4;
                    *sink ^= d.qw[d.qw.len() / 2];
                    spare = d.qw;
                };
            let qkv: Vec<&engine_format::Linear> = layer.qkv.parts.iter().collect();
            time(
                &qkv,
                ColumnOrder::QkvRope { head_dim: c.head_dim, q_dim, kv_dim: c.kv_dim() },
                &mut t_qkv,
                &mut bytes,
                &mut sink,
            );
            time(&[&layer.o_proj], ColumnOrder::Identity, &mut t_o, &mut bytes, &mut sink);
            time(
                &[&layer.gate_proj, &layer.up_proj],
                ColumnOrder::gate_up(&layer.gate_proj, &layer.up_proj, c.intermediate_size),
                &mut t_gu,
                &mut bytes,
                &mut sink,
            );
            time(&[&layer.down_proj], ColumnOrder::Identity, &mut t_down, &mut bytes, &mut sink);
        }
        println!(
        "pass {pass}: repack {:.2} GB: qkv {t_qkv:.3} s, o {t_o:.3} s, gate/up {t_gu:.3} s, down {t_down:.3} s ({sink})",
        bytes as f64 / 1e9
    );
    }
}

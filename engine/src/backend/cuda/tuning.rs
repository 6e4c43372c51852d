//! The CUDA backend's launch choices as an options struct: the defaults are what measured fastest
//! (BENCHMARKS.md), and experiments change them through the API (`EngineOptions::tuning`) or
//! `engine-cli bench --tune key=value`. Nothing here is read from the environment.

use crate::error::{Error, Result};

/// Launch choices of the CUDA backend. [`Tuning::default`] is what measured best; the other values exist to
/// measure alternatives without rebuilding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Programmatic dependent launch (sm_90+): each kernel may start its prologue while the previous one drains.
    /// Off measured 460.8 instead of 514.2 tok/s on an H100. Ignored below sm_90.
    pub pdl: bool,
    /// GEMV blocks per SM the decode grids are sized for, 1..=16 (12: the best of 2, 4, 6, 8, 12 on an H200).
    pub gemv_blocks_per_sm: u32,
    /// Decode attention blocks per head at most (1..=64; the plan's `attention_splits` caps it): a long context's
    /// positions are split over that many blocks, merged by the last.
    pub attn_splits: u32,
    /// Decode attention blocks per head while the context is short (0: always `attn_splits`): up to
    /// `attn_short_splits × ATTN_MIN_PER_SPLIT` positions, the full split count leaves every split past that many
    /// idle (each split takes at least that many positions), so decode replays a second graph whose attention
    /// launches only the splits with work — the same work, fewer blocks to place and retire. 7B decode after 16
    /// tokens on an H100: 560.5 tok/s against 553.6 with one graph (BENCHMARKS.md).
    pub attn_short_splits: u32,
    /// Decode attention with a head's splits in one thread block cluster (`attn_decode_cluster`, sm_90, at most
    /// 16 splits): the splits hand their partial states to split 0 through its shared memory instead of L2 and
    /// an atomic counter. 7B decode on an H100: 549.2 tok/s after 16 tokens against 547.6 without, 448.9 against
    /// 437.5 after 2048 (BENCHMARKS.md).
    pub attn_cluster: bool,
    /// Residual GEMVs (o/down) with 16 warps per block where the projection has fewer than 4 tiles per SM.
    pub gemv_wide: bool,
    /// Decode GEMVs on the weight ring (sm_90; `gemv_ring_*`): one more warp per block streams the weights into
    /// shared memory by bulk copies. Off: each lane keeps its next weights in flight in registers (measured faster
    /// in a decode step: 589 against 567 tok/s on an H200 with the ring's best `gemv_blocks_per_sm`, 4; and racecheck
    /// reports potential hazards on its stages that are still to be settled: BENCHMARKS.md).
    pub gemv_ring: bool,
    /// Decode GEMVs with the lean K loop (`gemv_lean_*`): a warp's steps addressed by compile-time strides from one
    /// base per array, and no bounds checks in batches wholly inside its steps; the same loads and the same bits.
    /// 7B decode on an H200: 601.9 tok/s after 16 tokens against 582.8 with the register-pipelined kernels'
    /// addressing (`Registers`), 495.0 against 477.6 after 2048 (BENCHMARKS.md). Ignored with `gemv_ring`.
    pub gemv_lean: bool,
    /// Decode GEMVs over symmetric int4 linears (every zero point 8, as AutoGPTQ's `sym: true` writes them) read
    /// a scales-only copy of their (scale, zero) words, 2 bytes per group and column instead of 4, with the zero a
    /// constant (`gemv_sym_int4_*`, `gemv_lean_sym_int4_*`): ~2.5% fewer bytes per 7B decode step, the same bits.
    /// The copy is planned for every symmetric linear (+0.1 GB on the 7B) and filled only with this on. 7B decode
    /// on an H200 with `gemv_lean`: 616.1 tok/s after 16 tokens against 601.9 without, 504.2 against 495.0 after
    /// 2048; on an H100, both on against both off: 534.6 against 513.2, 434.1 against 419.3 (BENCHMARKS.md).
    /// Ignored with `gemv_ring`.
    pub gemv_sym: bool,
    /// MB of the next GEMV's weights (its first bytes) each decode GEMV asks the L2 for once its own loads are
    /// issued, 0..=64 (sm_90; 0: none). No gain measured: 2-4 MB within the spread, 8 MB and more slower (572
    /// against 588 tok/s at 8 on an H200: the prefetch takes DRAM time from the running GEMV; BENCHMARKS.md).
    pub gemv_prefetch_mb: u32,
    /// 32-row passes of each lm_head block, 1..=16: every block stages and normalizes the whole input row before
    /// it streams its rows, so more passes per block mean fewer of those prologues (and fewer, longer blocks).
    /// 7B decode after 16 tokens: 2 passes 672.8 / 673.5 tok/s against 667.7 / 666.6 with 1 on an H200, 569.8
    /// against 567.6 / 567.4 on an H100 (4: the same as 2; 8 slower; BENCHMARKS.md).
    pub lm_head_passes: u32,
    /// Greedy steps (decode, and the prompt's first token) screen the head first: an int8 copy of it (planned
    /// beside the weights, half the head's bytes again) bounds every row's logit, and only the rows that can still
    /// be the argmax are computed from the fp16 head (`lm_head_screen`, `lm_head_exact`): the same token as the full
    /// head, from about half its bytes. Off: no copy is planned, and every step runs the full head (`lm_head_f16`).
    pub lm_head_screen: bool,
    /// The 128 × 128 prefill GEMM tile for chunks of at least 128 rows, where the card's shared memory allows it.
    pub gemm128: bool,
    /// Which 128-row prefill tile multiplies on Hopper's asynchronous tensor cores where the card has them (sm_90);
    /// [`WgmmaTile::Off`], or other cards, keep the 128 × 128 tile on `mma.sync` (`gemm128_int4_*`). Needs
    /// `gemm128`. 7B prefill of 512 tokens on an H200: 15.3 ms with the weights-in-registers tile, 20.3 with the
    /// 128-slot tile, 29.2 on `mma.sync` (BENCHMARKS.md).
    pub wgmma: WgmmaTile,
    /// Chunks of at most 16 rows of int4 weights on Hopper's wgmma, the weights dequantized in registers as the M
    /// side (`gemm_wgmma_short_int4_*`), where the card has it (sm_90), instead of `gemm_small` on `mma.sync`.
    pub wgmma_short: bool,
    /// Chunks of at most 64 rows of int4 weights on the GEMV-shaped tile (`gemv_rows*_int4_*`, `mma.sync`, any
    /// card): a block per 16-slot tile over all of K, no split-K, A in its fragment order. Where it applies (no
    /// act-order, K a multiple of 128, the chunk's rows rounded up to 16 within the plan's chunk) it replaces
    /// `wgmma_short`, `gemm_small` and the 64-row tile: 7B TTFT on an H200 2.46 ms at 16 tokens instead of 3.05,
    /// 3.4 at 32 instead of 7.1 (BENCHMARKS.md).
    pub gemv_rows: bool,
    /// Repack GPTQ int4 linears without act-order on the device (`repack.cu`: the checkpoint's tensors uploaded as
    /// they are, then reordered there) instead of on the host: 7B load 0.43 s instead of 1.0-1.2 s warm on an H200
    /// (BENCHMARKS.md).
    pub gpu_repack: bool,
    /// Load the prebuilt cubin for the card when there is one; off loads the PTX through the driver's JIT
    /// (seconds on a first run).
    pub cubin: bool,
}

/// The wgmma prefill tiles (`Tuning::wgmma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgmmaTile {
    /// None: `mma.sync` (`gemm128_int4_*`).
    Off,
    /// 128 × 128, two blocks per SM (`gemm_wgmma_int4_*`).
    Slots128,
    /// 128 × 256, one block per SM (`gemm_wgmma256_int4_*`).
    Slots256,
    /// 128 × 128 with a producer warpgroup and two consumer warpgroups on mbarriers (`gemm_wgmma_ws_int4_*`).
    WarpSpecialized,
    /// 128 slots × 128 rows with the weights dequantized in registers as the M side (`gemm_wgmma_wreg_int4_*`),
    /// after `permute_k_steps` puts the rows of A in its K order.
    WeightsInRegisters,
}

impl WgmmaTile {
    const NAMES: [(WgmmaTile, &'static str); 5] = [
        (WgmmaTile::Off, "off"),
        (WgmmaTile::Slots128, "128"),
        (WgmmaTile::Slots256, "256"),
        (WgmmaTile::WarpSpecialized, "ws"),
        (WgmmaTile::WeightsInRegisters, "wreg"),
    ];
    fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(t, _)| *t == self).map_or("off", |(_, n)| n)
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            pdl: true,
            gemv_blocks_per_sm: 12,
            attn_splits: 64,
            attn_short_splits: 8,
            attn_cluster: true,
            gemv_wide: true,
            gemv_ring: false,
            gemv_lean: true,
            gemv_sym: true,
            gemv_prefetch_mb: 0,
            lm_head_passes: 2,
            lm_head_screen: true,
            gemm128: true,
            wgmma: WgmmaTile::WeightsInRegisters,
            wgmma_short: true,
            gemv_rows: true,
            gpu_repack: true,
            cubin: true,
        }
    }
}

/// Every key [`Tuning::set`] takes, with the values it accepts and what it changes.
pub const TUNING_KEYS: &[(&str, &str, &str)] = &[
    ("pdl", "on|off", "programmatic dependent launch between kernels (sm_90+)"),
    ("gemv_blocks_per_sm", "1..=16", "GEMV blocks per SM the decode grids are sized for"),
    ("attn_splits", "1..=64", "decode attention blocks per head at most (capped by the memory plan)"),
    (
        "attn_short_splits",
        "0..=64",
        "decode attention blocks per head at short contexts (0: attn_splits at every context)",
    ),
    ("attn_cluster", "on|off", "decode attention merges a head's splits inside a thread block cluster (sm_90)"),
    ("gemv_wide", "on|off", "16-warp o/down GEMVs where a projection has fewer than 4 tiles per SM"),
    ("gemv_ring", "on|off", "decode GEMVs on a shared-memory ring filled by bulk copies (sm_90)"),
    ("gemv_lean", "on|off", "decode GEMVs with the lean K loop (strength-reduced addressing; the same bits)"),
    ("gemv_sym", "on|off", "decode GEMVs over symmetric int4 linears read their scales alone (half the scale bytes)"),
    ("gemv_prefetch", "0..=64", "MB of the next GEMV's first weights each decode GEMV asks the L2 for (sm_90)"),
    ("lm_head_passes", "1..=16", "32-row passes of each lm_head block (each block stages the input row once)"),
    ("lm_head_screen", "on|off", "greedy decode screens the head with an int8 copy (+0.5x the head's memory)"),
    ("gemm128", "on|off", "the 128 x 128 prefill GEMM tile for chunks of >= 128 rows"),
    ("wgmma", "off|128|256|ws|wreg", "the 128-row prefill tile on Hopper's wgmma tensor cores (sm_90; needs gemm128)"),
    ("wgmma_short", "on|off", "chunks of <= 16 rows on Hopper's wgmma, weights as the M side (sm_90, int4)"),
    ("gemv_rows", "on|off", "chunks of <= 64 rows on the GEMV-shaped mma.sync tile (int4, no act-order)"),
    ("gpu_repack", "on|off", "repack GPTQ int4 linears without act-order on the device instead of the host"),
    ("cubin", "on|off", "the prebuilt cubin (off: the PTX through the driver's JIT)"),
];

impl Tuning {
    /// Set one knob from `key=value` text (see [`TUNING_KEYS`]); the error names the key and what it accepts.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let flag = |v: &str| match v {
            "on" | "true" | "1" => Ok(true),
            "off" | "false" | "0" => Ok(false),
            _ => Err(Error::InvalidArgument(format!("tuning {key}={v}: expected on or off"))),
        };
        let count = |v: &str, range: std::ops::RangeInclusive<u32>| {
            v.parse::<u32>().ok().filter(|n| range.contains(n)).ok_or_else(|| {
                Error::InvalidArgument(format!("tuning {key}={v}: expected {}..={}", range.start(), range.end()))
            })
        };
        match key {
            "pdl" => self.pdl = flag(value)?,
            "gemv_wide" => self.gemv_wide = flag(value)?,
            "gemv_ring" => self.gemv_ring = flag(value)?,
            "gemv_lean" => self.gemv_lean = flag(value)?,
            "gemv_sym" => self.gemv_sym = flag(value)?,
            "gemm128" => self.gemm128 = flag(value)?,
            "lm_head_screen" => self.lm_head_screen = flag(value)?,
            "wgmma" => {
                self.wgmma = WgmmaTile::NAMES.iter().find(|(_, n)| *n == value).map(|(t, _)| *t).ok_or_else(|| {
                    Error::InvalidArgument(format!("tuning wgmma={value}: expected off, 128, 256, ws or wreg"))
                })?
            }
            "wgmma_short" => self.wgmma_short = flag(value)?,
            "gemv_rows" => self.gemv_rows = flag(value)?,
            "cubin" => self.cubin = flag(value)?,
            "gpu_repack" => self.gpu_repack = flag(value)?,
            "attn_splits" => self.attn_splits = count(value, 1..=64)?,
            "attn_short_splits" => self.attn_short_splits = count(value, 0..=64)?,
            "attn_cluster" => self.attn_cluster = flag(value)?,
            "gemv_blocks_per_sm" => self.gemv_blocks_per_sm = count(value, 1..=16)?,
            "gemv_prefetch" => self.gemv_prefetch_mb = count(value, 0..=64)?,
            "lm_head_passes" => self.lm_head_passes = count(value, 1..=16)?,
            _ => {
                let keys: Vec<&str> = TUNING_KEYS.iter().map(|k| k.0).collect();
                return Err(Error::InvalidArgument(format!(
                    "unknown tuning key `{key}`: expected one of {}",
                    keys.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Apply comma-separated `key=value` assignments (`"pdl=off,gemv_blocks_per_sm=8"`) to the defaults.
    pub fn parse(spec: &str) -> Result<Tuning> {
        let mut t = Tuning::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| Error::InvalidArgument(format!("tuning `{item}`: expected key=value")))?;
            t.set(key.trim(), value.trim())?;
        }
        Ok(t)
    }

    /// The settings as `key=value` text, in [`TUNING_KEYS`] order (what reports print).
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "pdl={},gemv_blocks_per_sm={},attn_splits={},attn_short_splits={},attn_cluster={},gemv_wide={},gemv_ring={},gemv_lean={},gemv_sym={},gemv_prefetch={},lm_head_passes={},lm_head_screen={},gemm128={},wgmma={},wgmma_short={},gemv_rows={},\
             gpu_repack={},\
             cubin={}",
            on(self.pdl),
            self.gemv_blocks_per_sm,
            self.attn_splits,
            self.attn_short_splits,
            on(self.attn_cluster),
            on(self.gemv_wide),
            on(self.gemv_ring),
            on(self.gemv_lean),
            on(self.gemv_sym),
            self.gemv_prefetch_mb,
            self.lm_head_passes,
            on(self.lm_head_screen),
            on(self.gemm128),
            self.wgmma.name(),
            on(self.wgmma_short),
            on(self.gemv_rows),
            on(self.gpu_repack),
            on(self.cubin)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sets_each_key_and_describe_round_trips() {
        let t = Tuning::parse(
            "pdl=off, gemv_blocks_per_sm=8,attn_splits=16,attn_short_splits=4,attn_cluster=off,gemv_wide=0,gemv_ring=on,gemv_lean=off,gemv_sym=off,gemv_prefetch=8,lm_head_passes=4,lm_head_screen=off,gemm128=false,wgmma=ws,wgmma_short=off,\
             gemv_rows=off,gpu_repack=off,cubin=off",
        )
        .unwrap();
        let want = Tuning {
            pdl: false,
            gemv_blocks_per_sm: 8,
            attn_splits: 16,
            attn_short_splits: 4,
            attn_cluster: false,
            gemv_wide: false,
            gemv_ring: true,
            gemv_lean: false,
            gemv_sym: false,
            gemv_prefetch_mb: 8,
            lm_head_passes: 4,
            lm_head_screen: false,
            gemm128: false,
            wgmma: WgmmaTile::WarpSpecialized,
            wgmma_short: false,
            gemv_rows: false,
            gpu_repack: false,
            cubin: false,
        };
        assert_eq!(t, want);
        assert_eq!(Tuning::parse(&t.describe()).unwrap(), t);
        assert_eq!(Tuning::parse("").unwrap(), Tuning::default());
        assert_eq!(TUNING_KEYS.len(), t.describe().split(',').count());
    }

    #[test]
    fn bad_values_name_the_key_and_what_it_takes() {
        let e = |s: &str| Tuning::parse(s).unwrap_err().to_string();
        assert!(e("pdl=maybe").contains("pdl=maybe: expected on or off"), "{}", e("pdl=maybe"));
        assert!(e("gemv_blocks_per_sm=0").contains("expected 1..=16"));
        assert!(e("gemv_blocks_per_sm=x").contains("expected 1..=16"));
        assert!(e("attn_splits=65").contains("expected 1..=64"));
        assert!(e("lm_head_passes=0").contains("expected 1..=16"));
        assert!(e("warp_speed=9").contains("unknown tuning key `warp_speed`: expected one of pdl,"));
        assert!(e("pdl").contains("expected key=value"));
        assert!(e("wgmma=64").contains("wgmma=64: expected off, 128, 256, ws or wreg"));
    }
}

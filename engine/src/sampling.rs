//! Picking the next token from logits with the semantics of Hugging Face `generate`: the repetition penalty over
//! every token in the context, then temperature, top-k, top-p and min-p; greedy when the temperature is 0 or top-k
//! is 1.
//!
//! The randomness is counter-based: the number drawn for a token is a function of the seed and the token's position
//! in the sequence (Philox4x32-10), so the same seed gives the same tokens however the steps are run, and the CUDA
//! backend's sampler (`ptx/kernels/sample.cu`), which follows the rules below step for step and in the same
//! arithmetic, picks the same tokens wherever no probability sits at a boundary. The rules, for logits `l`:
//! - penalty: `l / r` if `l > 0` else `l * r`, once per token id in the context; NaN counts as −inf;
//! - `z = l * (1 / temperature)`; `zmax` the largest; each token's mass `q = trunc(exp(z − zmax) · 2^40)`;
//! - top-k: keep every `z >=` the k-th largest (ties at the boundary survive);
//! - top-p: over the top-k survivors, largest first (ties by smaller id), keep a token while the mass of the ones
//!   kept before it is below `top_p · Z` (`Z` their total mass, compared in f64);
//! - min-p: keep `exp(z − zmax) >= min_p`;
//! - draw: `u` in [0, 1) from (seed, position); the first survivor in id order at which the cumulative mass passes
//!   `trunc(u · M)` (`M` the survivors' total mass).

use crate::error::{Error, Result};

/// How to pick tokens. The defaults are greedy decoding with no penalty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it before top-k/top-p.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Keep only tokens at least `min_p` times as likely as the most likely one; 0 disables.
    pub min_p: f32,
    /// HF repetition penalty over every token already in the sequence; 1 disables (the model card uses 1.1).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, seed: 0 }
    }
}

impl SamplerParams {
    /// Reject values outside their domain, naming the argument.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(Error::InvalidArgument(format!("temperature must be a finite number >= 0, got {t}")));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::InvalidArgument(format!("top_p must be in (0, 1], got {p}")));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(Error::InvalidArgument(format!("min_p must be in [0, 1], got {m}")));
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(Error::InvalidArgument(format!("repetition_penalty must be a finite number > 0, got {r}")));
        }
        Ok(())
    }

    /// Whether sampling reduces to taking the argmax of the (penalized) logits.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Whether the plain argmax of the raw logits answers: greedy without a penalty.
    pub fn is_plain_argmax(&self) -> bool {
        self.is_greedy() && self.repetition_penalty == 1.0
    }
}

/// A token's mass relative to the most likely one, 2^40 = as likely: fixed point, so that sums do not depend on
/// their order (the device adds them in parallel).
const MASS_ONE: f32 = (1u64 << 40) as f32;

/// A sampler: validated parameters and scratch space. It holds no random state: the draw for a position is a
/// function of the seed and the position.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub params: SamplerParams,
    /// Scratch: which tokens have been penalized in this call (a token repeated in the history is penalized once).
    seen: Vec<bool>,
    /// Scratch: (z, id, mass) of the candidates.
    candidates: Vec<(f32, u32, u64)>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler { params, seen: Vec::new(), candidates: Vec::new() })
    }

    /// Pick the token for sequence position `position` from `logits` (those of the position before). `logits` is
    /// modified in place (penalty). `history` is every token of the sequence so far, prompt included; ids in it
    /// outside the vocabulary are ignored.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32], position: usize) -> u32 {
        self.apply_repetition_penalty(logits, history);
        let p = self.params;
        let inv_t = if p.is_greedy() { 1.0 } else { 1.0 / p.temperature };
        let z = |l: f32| if l.is_nan() { f32::NEG_INFINITY } else { l * inv_t + 0.0 };
        // The largest z and its first id.
        let (mut zmax, mut best) = (f32::NEG_INFINITY, None);
        for (i, &l) in logits.iter().enumerate() {
            if z(l) > zmax {
                (zmax, best) = (z(l), Some(i as u32));
            }
        }
        let best = best.unwrap_or(0);
        if p.is_greedy() || !zmax.is_finite() {
            return best;
        }

        // Top-k: every z >= the k-th largest survives.
        let mut floor = f32::NEG_INFINITY;
        if p.top_k > 0 && p.top_k < logits.len() {
            let mut zs: Vec<f32> = logits.iter().map(|&l| z(l)).collect();
            let (_, kth, _) = zs.select_nth_unstable_by(p.top_k - 1, |a, b| b.total_cmp(a));
            floor = *kth;
        }
        let mass = |z: f32| ((z - zmax).exp() * MASS_ONE) as u64;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (z(l), i as u32))
                .filter(|c| c.0 >= floor)
                .map(|(z, i)| (z, i, mass(z))),
        );

        // Top-p over the survivors: largest first, ties by id; a token stays while the mass before it is below
        // top_p of the total. Tokens of mass 0 can never be drawn, so they need no place in the order.
        if p.top_p < 1.0 {
            let total: u64 = self.candidates.iter().map(|c| c.2).sum();
            let target = p.top_p as f64 * total as f64;
            self.candidates.retain(|c| c.2 > 0);
            self.candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut before = 0u64;
            let keep = self
                .candidates
                .iter()
                .take_while(|c| {
                    let keep = (before as f64) < target;
                    before += c.2;
                    keep
                })
                .count();
            self.candidates.truncate(keep);
            self.candidates.sort_unstable_by_key(|c| c.1);
        }
        // Min-p: as likely as min_p times the most likely one, or more.
        if p.min_p > 0.0 {
            self.candidates.retain(|c| (c.0 - zmax).exp() >= p.min_p);
        }

        // The draw, in id order.
        let total: u64 = self.candidates.iter().map(|c| c.2).sum();
        let target = (uniform(p.seed, position as u64) * total as f64) as u64;
        let mut acc = 0u64;
        for c in &self.candidates {
            acc += c.2;
            if target < acc {
                return c.1;
            }
        }
        best
    }

    fn apply_repetition_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let penalty = self.params.repetition_penalty;
        if penalty == 1.0 || history.is_empty() {
            return;
        }
        self.seen.clear();
        self.seen.resize(logits.len(), false);
        for &id in history {
            let i = id as usize;
            if i < logits.len() && !self.seen[i] {
                self.seen[i] = true;
                let l = logits[i];
                logits[i] = if l > 0.0 { l / penalty } else { l * penalty };
            }
        }
    }
}

/// The exact distribution the sampler draws from, computed independently of it in f64 straight from the Hugging
/// Face definitions (penalty, temperature, top-k with ties kept, top-p over the renormalized top-k set with ties
/// broken by id, min-p): `probabilities[i]` for every token id. The reference the sampling tests compare the CPU
/// and GPU samplers' frequencies with.
pub fn probabilities(logits: &[f32], history: &[u32], p: &SamplerParams) -> Vec<f64> {
    let n = logits.len();
    let mut l: Vec<f64> = logits.iter().map(|&v| if v.is_nan() { f64::NEG_INFINITY } else { v as f64 }).collect();
    let mut penalized = vec![false; n];
    for &t in history {
        let t = t as usize;
        if p.repetition_penalty != 1.0 && t < n && !penalized[t] {
            penalized[t] = true;
            let r = p.repetition_penalty as f64;
            l[t] = if l[t] > 0.0 { l[t] / r } else { l[t] * r };
        }
    }
    let mut out = vec![0f64; n];
    let first_max = (0..n).fold(None, |b: Option<usize>, i| match b {
        Some(j) if l[j] >= l[i] => Some(j),
        _ if l[i] > f64::NEG_INFINITY => Some(i),
        b => b,
    });
    if p.is_greedy() {
        out[first_max.unwrap_or(0)] = 1.0;
        return out;
    }
    let z: Vec<f64> = l.iter().map(|&v| v / p.temperature as f64).collect();
    let zmax = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut keep: Vec<bool> = vec![true; n];
    if p.top_k > 0 && p.top_k < n {
        let mut sorted = z.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[p.top_k - 1];
        keep.iter_mut().zip(&z).for_each(|(k, &v)| *k = v >= kth);
    }
    let weight = |i: usize| (z[i] - zmax).exp();
    if p.top_p < 1.0 {
        let total: f64 = (0..n).filter(|&i| keep[i]).map(weight).sum();
        let mut order: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
        let mut before = 0.0;
        for i in order {
            keep[i] = before < p.top_p as f64 * total;
            before += weight(i);
        }
    }
    if p.min_p > 0.0 {
        keep.iter_mut().enumerate().for_each(|(i, k)| *k = *k && weight(i) >= p.min_p as f64);
    }
    let total: f64 = (0..n).filter(|&i| keep[i]).map(weight).sum();
    for i in (0..n).filter(|&i| keep[i]) {
        out[i] = weight(i) / total;
    }
    out
}

/// Index of the largest logit; the first one on ties. NaN is never chosen over a number.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC 2011): the block of
/// four words for counter `ctr` under key `key`. The device computes the same function.
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    for _ in 0..10 {
        let p0 = 0xD251_1F53u64 * ctr[0] as u64;
        let p1 = 0xCD9E_8D57u64 * ctr[2] as u64;
        ctr = [(p1 >> 32) as u32 ^ ctr[1] ^ key[0], p1 as u32, (p0 >> 32) as u32 ^ ctr[3] ^ key[1], p0 as u32];
        key[0] = key[0].wrapping_add(0x9E37_79B9);
        key[1] = key[1].wrapping_add(0xBB67_AE85);
    }
    ctr
}

/// The uniform number in [0, 1) (53 random bits) drawn for the token at `position` under `seed`.
pub fn uniform(seed: u64, position: u64) -> f64 {
    let r = philox4x32_10([position as u32, (position >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32]);
    ((((r[0] >> 5) as u64) << 26) | (r[1] >> 6) as u64) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The sampling settings the distribution tests run, on fixed logits, for the CPU sampler here and the device's
/// in the CUDA kernel tests; and the chi-square test of observed draws against [`probabilities`].
#[cfg(test)]
pub(crate) mod distribution_test {
    use super::*;

    /// A setting on fixed logits: the context (`history`) is what the penalty sees.
    pub struct Case {
        pub name: &'static str,
        pub logits: Vec<f32>,
        pub history: Vec<u32>,
        pub params: SamplerParams,
    }

    /// Logits that look like a model's: mostly spread around 0, a few tokens well above the rest.
    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n).map(|_| if next() < 0.01 { 6.0 + 4.0 * next() } else { 4.0 * (next() - 0.5) } as f32).collect()
    }

    pub fn cases() -> Vec<Case> {
        let p = |temperature: f32| SamplerParams { temperature, seed: 1234, ..Default::default() };
        let case = |name, logits, params| Case { name, logits, history: Vec::new(), params };
        let mut dominant = logits(1000, 10);
        dominant[17] = 12.0; // about 0.6 of the mass
        let mut ties_k = vec![-2f32; 1000];
        ties_k[..6].copy_from_slice(&[5.0, 4.0, 3.0, 3.0, 3.0, 1.0]);
        let mut ties_p = vec![-10f32; 1000];
        ties_p[..5].copy_from_slice(&[2.0, 1.0, 1.0, 1.0, 1.0]);
        let mut tied_max = logits(1000, 9);
        for i in [10, 500, 999] {
            tied_max[i] = 20.0;
        }
        let mut minus_inf = logits(1000, 11);
        minus_inf.iter_mut().step_by(2).for_each(|l| *l = f32::NEG_INFINITY);
        let penalized = logits(1000, 3);
        let mut history: Vec<u32> = (0..1000u32).filter(|&i| penalized[i as usize] > 5.0).collect();
        history.extend([1, 2, 3, 4, 4, 4]);
        vec![
            case("temperature 0.7, top-p 0.9", logits(1000, 1), SamplerParams { top_p: 0.9, ..p(0.7) }),
            case("temperature 0.8, top-k 40, vocab 2051", logits(2051, 2), SamplerParams { top_k: 40, ..p(0.8) }),
            Case {
                name: "temperature 0.7, top-p 0.9, repetition penalty 1.1",
                logits: penalized,
                history,
                params: SamplerParams { top_p: 0.9, repetition_penalty: 1.1, ..p(0.7) },
            },
            case("temperature 1, min-p 0.05", logits(1000, 4), SamplerParams { min_p: 0.05, ..p(1.0) }),
            case("top-k 1", logits(1000, 5), SamplerParams { top_k: 1, ..p(1.0) }),
            Case {
                name: "greedy, repetition penalty 1.3",
                logits: logits(1000, 12),
                history: (0..1000).collect(),
                params: SamplerParams { repetition_penalty: 1.3, ..p(0.0) },
            },
            case("top-p below the top token's mass", dominant, SamplerParams { top_p: 0.3, ..p(1.0) }),
            case("temperature 1e-3", logits(1000, 6), p(1e-3)),
            case("temperature 1e-3, three tied maxima", tied_max, p(1e-3)),
            case("temperature 100", logits(1000, 7), p(100.0)),
            case("ties at the top-k boundary", ties_k, SamplerParams { top_k: 3, ..p(1.0) }),
            case("ties at the top-p boundary", ties_p, SamplerParams { top_p: 0.6, ..p(1.0) }),
            case("-inf logits, top-p 0.95", minus_inf, SamplerParams { top_p: 0.95, ..p(1.0) }),
            case(
                "everything at once, vocab 4099",
                logits(4099, 8),
                SamplerParams { top_k: 50, top_p: 0.92, min_p: 0.02, repetition_penalty: 1.2, ..p(0.9) },
            ),
        ]
    }

    /// Pearson's chi-square test of `counts` (draws per token id) against `probs`: tokens of probability 0 must
    /// never be drawn, tokens expected fewer than 5 times are pooled, and the statistic must stay below the
    /// critical value at p = 1e-6 (Wilson-Hilferty). The draws are seeded, so the outcome is fixed, not flaky.
    pub fn check(name: &str, counts: &[u64], probs: &[f64]) -> std::result::Result<(), String> {
        let n: u64 = counts.iter().sum();
        if let Some(i) = (0..probs.len()).find(|&i| probs[i] == 0.0 && counts[i] > 0) {
            return Err(format!("{name}: token {i} has probability 0 but was drawn {} times", counts[i]));
        }
        let (mut chi2, mut df, mut pooled_e, mut pooled_o) = (0f64, 0i64, 0f64, 0f64);
        for (&c, &p) in counts.iter().zip(probs) {
            let e = p * n as f64;
            if e >= 5.0 {
                chi2 += (c as f64 - e).powi(2) / e;
                df += 1;
            } else {
                pooled_e += e;
                pooled_o += c as f64;
            }
        }
        if pooled_e >= 5.0 {
            chi2 += (pooled_o - pooled_e).powi(2) / pooled_e;
            df += 1;
        } else if pooled_o > pooled_e + 5.0 + 5.0 * pooled_e.sqrt() {
            return Err(format!("{name}: {pooled_o} draws of tokens expected {pooled_e:.2} times in all"));
        }
        let df = (df - 1).max(1) as f64;
        let z = 4.75; // one-sided p ≈ 1e-6
        let critical = df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3);
        if chi2 > critical {
            return Err(format!("{name}: chi-square {chi2:.1} > {critical:.1} ({df} degrees of freedom, {n} draws)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU sampler draws from exactly the distribution of its settings: every case of the distribution test,
    /// 10000 draws at consecutive positions.
    #[test]
    fn draws_follow_the_exact_distribution_in_every_setting() {
        for case in distribution_test::cases() {
            let probs = probabilities(&case.logits, &case.history, &case.params);
            assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{}", case.name);
            let mut s = sampler(case.params);
            let mut counts = vec![0u64; case.logits.len()];
            for pos in 0..10000 {
                counts[s.sample(&mut case.logits.clone(), &case.history, pos) as usize] += 1;
            }
            distribution_test::check(case.name, &counts, &probs).unwrap();
        }
    }

    #[test]
    fn reference_distributions_keep_what_the_settings_say() {
        let cases = distribution_test::cases();
        let probs = |name: &str| {
            let c = cases.iter().find(|c| c.name == name).unwrap();
            probabilities(&c.logits, &c.history, &c.params)
        };
        let support = |p: &[f64]| p.iter().enumerate().filter(|(_, &v)| v > 0.0).map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(support(&probs("ties at the top-k boundary")), [0, 1, 2, 3, 4]);
        assert_eq!(support(&probs("ties at the top-p boundary")), [0, 1, 2]);
        assert_eq!(support(&probs("top-p below the top token's mass")), [17]);
        assert_eq!(support(&probs("temperature 1e-3, three tied maxima")), [10, 500, 999]);
        assert_eq!(support(&probs("top-k 1")).len(), 1);
        assert!(support(&probs("temperature 100")).len() == 1000);
        let c = cases.iter().find(|c| c.name == "top-p below the top token's mass").unwrap();
        let top = probabilities(&c.logits, &[], &SamplerParams { top_p: 1.0, ..c.params })[17];
        assert!((0.4..0.9).contains(&top), "the top token's mass {top}");
    }

    fn sampler(p: SamplerParams) -> Sampler {
        Sampler::new(p).unwrap()
    }

    #[test]
    fn philox_matches_the_published_known_answers() {
        // Random123's kat_vectors for philox4x32_10.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniform_depends_on_seed_and_position_only_and_lies_in_0_1() {
        assert_eq!(uniform(7, 100), uniform(7, 100));
        assert_ne!(uniform(7, 100), uniform(7, 101));
        assert_ne!(uniform(7, 100), uniform(8, 100));
        let mean: f64 = (0..10000).map(|p| uniform(3, p)).inspect(|u| assert!((0.0..1.0).contains(u))).sum::<f64>();
        assert!((mean / 10000.0 - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = sampler(SamplerParams::default());
        assert_eq!(s.sample(&mut [0.5, 2.0, -1.0, 2.0], &[], 0), 1);
        assert_eq!(s.sample(&mut [f32::NEG_INFINITY, f32::NAN], &[], 0), 0);
    }

    #[test]
    fn repetition_penalty_follows_hf_signs_and_counts_once() {
        let mut s = sampler(SamplerParams { repetition_penalty: 2.0, ..Default::default() });
        let mut logits = [4.0, -1.0, 3.0];
        s.apply_repetition_penalty(&mut logits, &[0, 1, 0, 0, 7]);
        // positive divided, negative multiplied, token 0 penalized once although it appears three times,
        // the out-of-vocabulary id 7 ignored.
        assert_eq!(logits, [2.0, -2.0, 3.0]);
        let mut logits = [4.0, -1.0, 3.0];
        assert_eq!(s.sample(&mut logits, &[0], 0), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_support() {
        let p = SamplerParams { temperature: 1.0, top_k: 2, seed: 3, ..Default::default() };
        let mut s = sampler(p);
        for pos in 0..200 {
            let t = s.sample(&mut [1.0, 5.0, 4.9, -3.0], &[], pos);
            assert!(t == 1 || t == 2, "token {t} is outside the top 2");
        }
        let mut s = sampler(SamplerParams { temperature: 1.0, top_k: 1, ..Default::default() });
        assert_eq!(s.sample(&mut [1.0, 5.0, 4.9], &[], 0), 1);
    }

    #[test]
    fn top_p_keeps_the_smallest_sufficient_prefix() {
        // probabilities ~ [0.643, 0.237, 0.087, 0.032]; top_p 0.7 keeps the first two.
        let p = SamplerParams { temperature: 1.0, top_p: 0.7, seed: 11, ..Default::default() };
        let mut s = sampler(p);
        let mut seen = [0usize; 4];
        for pos in 0..2000 {
            seen[s.sample(&mut [3.0, 2.0, 1.0, 0.0], &[], pos) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[0] > seen[1] && seen[1] > 300, "{seen:?}");
    }

    #[test]
    fn min_p_drops_the_unlikely() {
        // relative probabilities 1, e^-1, e^-2, e^-3: min_p 0.2 keeps the first two.
        let p = SamplerParams { temperature: 1.0, min_p: 0.2, seed: 5, ..Default::default() };
        let mut s = sampler(p);
        let mut seen = [0usize; 4];
        for pos in 0..2000 {
            seen[s.sample(&mut [3.0, 2.0, 1.0, 0.0], &[], pos) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[1] > 300, "{seen:?}");
    }

    #[test]
    fn same_seed_and_position_same_token_other_seed_other_tokens() {
        let run = |seed| {
            let mut s = sampler(SamplerParams { temperature: 1.0, seed, ..Default::default() });
            (0..64).map(|pos| s.sample(&mut [0.1, 0.2, 0.3, 0.0, 0.25], &[], pos)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // A position drawn twice gives the same token: the draw is a function of (seed, position).
        let mut s = sampler(SamplerParams { temperature: 1.0, seed: 7, ..Default::default() });
        assert_eq!(s.sample(&mut [0.1, 0.2, 0.3, 0.0, 0.25], &[], 9), run(7)[9]);
    }

    #[test]
    fn bad_parameters_are_rejected_by_name() {
        for (p, word) in [
            (SamplerParams { temperature: -1.0, ..Default::default() }, "temperature"),
            (SamplerParams { top_p: 0.0, ..Default::default() }, "top_p"),
            (SamplerParams { top_p: 1.5, ..Default::default() }, "top_p"),
            (SamplerParams { min_p: -0.1, ..Default::default() }, "min_p"),
            (SamplerParams { min_p: f32::NAN, ..Default::default() }, "min_p"),
            (SamplerParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty"),
            (SamplerParams { temperature: f32::NAN, ..Default::default() }, "temperature"),
        ] {
            let e = Sampler::new(p).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }
}

//! Picking the next token from logits: greedy, temperature, top-k, top-p and the repetition penalty, with the
//! semantics of Hugging Face `generate` (penalty first, then temperature, top-k, top-p), and a seeded generator so
//! that the same seed gives the same tokens.

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
    /// HF repetition penalty over every token already in the sequence; 1 disables (the model card uses 1.1).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
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
}

/// A sampler: its parameters plus the state of its random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub params: SamplerParams,
    rng: Rng,
    /// Scratch: which tokens have been penalized in this call (a token repeated in the history is penalized once).
    seen: Vec<bool>,
    /// Scratch: candidate (logit, id) pairs.
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler { params, rng: Rng::new(params.seed), seen: Vec::new(), candidates: Vec::new() })
    }

    /// Pick the next token. `logits` is modified in place (penalty, temperature). `history` is every token of the
    /// sequence so far, prompt included. Ids in `history` outside the vocabulary are ignored.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_repetition_penalty(logits, history);
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        self.candidates.clear();
        self.candidates.extend(logits.iter().enumerate().map(|(i, &l)| (l * inv_t, i as u32)));
        // Most likely first; ties broken by the smaller id so the order is deterministic.
        self.candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        let top_k = self.params.top_k;
        if top_k > 0 && top_k < self.candidates.len() {
            // HF keeps every token whose logit is >= the k-th largest, so ties at the boundary survive.
            let kth = self.candidates[top_k - 1].0;
            let keep = self.candidates.iter().take_while(|c| c.0 >= kth).count();
            self.candidates.truncate(keep);
        }

        // Softmax over the survivors.
        let max = self.candidates[0].0;
        let mut sum = 0f64;
        for c in self.candidates.iter_mut() {
            c.0 = (c.0 - max).exp();
            sum += c.0 as f64;
        }
        for c in self.candidates.iter_mut() {
            c.0 = (c.0 as f64 / sum) as f32;
        }

        if self.params.top_p < 1.0 {
            // HF sorts ascending and drops tokens whose cumulative probability is <= 1 - top_p, always keeping the
            // most likely one. In descending order that keeps a prefix: a token survives while the mass of the
            // tokens less likely than it, plus its own, exceeds 1 - top_p.
            let threshold = 1.0 - self.params.top_p as f64;
            let mut tail = 0f64; // cumulative mass from the least likely end
            let mut keep = self.candidates.len();
            for (i, c) in self.candidates.iter().enumerate().rev() {
                tail += c.0 as f64;
                if tail <= threshold && i > 0 {
                    keep = i;
                } else {
                    break;
                }
            }
            self.candidates.truncate(keep);
            let kept: f64 = self.candidates.iter().map(|c| c.0 as f64).sum();
            for c in self.candidates.iter_mut() {
                c.0 = (c.0 as f64 / kept) as f32;
            }
        }

        let u = self.rng.next_f64();
        let mut acc = 0f64;
        for c in &self.candidates {
            acc += c.0 as f64;
            if u < acc {
                return c.1;
            }
        }
        self.candidates.last().map(|c| c.1).unwrap_or(0)
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

/// xoshiro256** seeded through splitmix64: small, fast, and the same stream on every platform.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(p: SamplerParams) -> Sampler {
        Sampler::new(p).unwrap()
    }

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = sampler(SamplerParams::default());
        assert_eq!(s.sample(&mut [0.5, 2.0, -1.0, 2.0], &[]), 1);
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
        assert_eq!(s.sample(&mut logits, &[0]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_support() {
        let p = SamplerParams { temperature: 1.0, top_k: 2, seed: 3, ..Default::default() };
        let mut s = sampler(p);
        for _ in 0..200 {
            let t = s.sample(&mut [1.0, 5.0, 4.9, -3.0], &[]);
            assert!(t == 1 || t == 2, "token {t} is outside the top 2");
        }
        let mut s = sampler(SamplerParams { temperature: 1.0, top_k: 1, ..Default::default() });
        assert_eq!(s.sample(&mut [1.0, 5.0, 4.9], &[]), 1);
    }

    #[test]
    fn top_p_keeps_the_smallest_sufficient_prefix() {
        // probabilities ~ [0.643, 0.237, 0.087, 0.032]; top_p 0.7 keeps the first two.
        let p = SamplerParams { temperature: 1.0, top_p: 0.7, seed: 11, ..Default::default() };
        let mut s = sampler(p);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[s.sample(&mut [3.0, 2.0, 1.0, 0.0], &[]) as usize] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[0] > seen[1] && seen[1] > 300, "{seen:?}");
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let run = |seed| {
            let mut s = sampler(SamplerParams { temperature: 1.0, seed, ..Default::default() });
            (0..64).map(|_| s.sample(&mut [0.1, 0.2, 0.3, 0.0, 0.25], &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn sampling_frequencies_match_softmax() {
        let mut s = sampler(SamplerParams { temperature: 0.5, seed: 1, ..Default::default() });
        let logits = [0.0f32, 0.5, 1.0];
        let n = 20000;
        let mut count = [0usize; 3];
        for _ in 0..n {
            count[s.sample(&mut logits.clone(), &[]) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| (l as f64 / 0.5).exp()).sum();
        for i in 0..3 {
            let expect = (logits[i] as f64 / 0.5).exp() / z;
            let got = count[i] as f64 / n as f64;
            assert!((got - expect).abs() < 0.015, "token {i}: {got} vs {expect}");
        }
    }

    #[test]
    fn bad_parameters_are_rejected_by_name() {
        for (p, word) in [
            (SamplerParams { temperature: -1.0, ..Default::default() }, "temperature"),
            (SamplerParams { top_p: 0.0, ..Default::default() }, "top_p"),
            (SamplerParams { top_p: 1.5, ..Default::default() }, "top_p"),
            (SamplerParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty"),
            (SamplerParams { temperature: f32::NAN, ..Default::default() }, "temperature"),
        ] {
            let e = Sampler::new(p).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }
}

//! The rotary position embedding table, shared by both backends: the CPU backend applies it, the CUDA backend
//! uploads it for its kernels. Angles are computed once, in f64, so that long positions keep their precision.

/// Rotary embedding in the Hugging Face LLaMA `rotate_half` convention: dimension `i` of a head pairs with
/// `i + head_dim/2`, rotated by `pos * theta^(-2i/head_dim)`. Angles are computed in f64 once, here.
pub struct RopeTable {
    half: usize,
    /// `[position][half]` cosines and sines.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(head_dim: usize, theta: f64, max_pos: usize) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for pos in 0..max_pos {
            for i in 0..half {
                let inv_freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    /// The table as `[position][head_dim/2]` (cos, sin), for backends that upload it.
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// Rotate every head in `v` (a row of heads, each `2 * half` wide) for position `pos`.
    pub fn apply(&self, v: &mut [f32], pos: usize) {
        let half = self.half;
        let cos = &self.cos[pos * half..][..half];
        let sin = &self.sin[pos * half..][..half];
        for head in v.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x1 * cos[i] + x0 * sin[i];
            }
        }
    }
}

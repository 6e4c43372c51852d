//! The AutoGPTQ packed layout at 4 and 8 bits, as plain arithmetic.
//!
//! For a linear layer with K inputs, N outputs, group size G (`groups = ceil(K / G)`) and `b` bits per weight, a
//! 32-bit word holds `P = 32 / b` values (8 at 4 bits, 4 at 8 bits), the first in the low bits:
//! - `qweight` I32 [K/P, N]: field `j` (bits `b·j..b·j+b`) of `qweight[r][n]` is `q[P·r + j][n]`;
//! - `qzeros` I32 [groups, N/P]: field `j` of `qzeros[g][c]` is `zero[g][P·c + j] - 1` (AutoGPTQ stores the zero
//!   point minus one, so the real zero is the stored field plus one);
//! - `scales` F16 [groups, N];
//! - `g_idx` I32 [K]: the group of each input row (`k / G` unless act-order permuted the rows).
//!
//! `W[k][n] = scales[g_idx[k]][n] · (q[k][n] − zero[g_idx[k]][n])` and `y = x · W`.
//!
//! [`Bits`] carries the width; the free functions ([`PACK`], [`nibble`], [`q_at`], [`zero_at`], [`pack8`]) are the
//! 4-bit case, which the CUDA tile layout (int4 only) is written in.

/// The bit widths this engine reads. AutoGPTQ also writes 2 and 3 bits; those are refused when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bits {
    Four,
    Eight,
}

impl Bits {
    /// The width for `quantize_config.json`'s `bits`, if this engine reads it.
    pub const fn from_count(bits: u32) -> Option<Bits> {
        match bits {
            4 => Some(Bits::Four),
            8 => Some(Bits::Eight),
            _ => None,
        }
    }
    /// Bits per weight: 4 or 8.
    pub const fn count(self) -> u32 {
        match self {
            Bits::Four => 4,
            Bits::Eight => 8,
        }
    }
    /// Values per packed 32-bit word: 8 or 4.
    pub const fn per_word(self) -> usize {
        32 / self.count() as usize
    }
    /// The largest stored value: 15 or 255.
    pub const fn max_value(self) -> u32 {
        (1 << self.count()) - 1
    }
    /// The value at `index` (0..per_word) of a packed word.
    #[inline(always)]
    pub const fn field(self, word: u32, index: usize) -> u32 {
        (word >> (self.count() as usize * index)) & self.max_value()
    }
    /// The quantized weight `q[k][n]` from `qweight` given as row-major words of width `n_cols`.
    #[inline(always)]
    pub fn q_at(self, qweight: &[u32], n_cols: usize, k: usize, n: usize) -> u32 {
        self.field(qweight[(k / self.per_word()) * n_cols + n], k % self.per_word())
    }
    /// The real zero point `zero[g][n]` (stored field plus one) from `qzeros` given as row-major words.
    #[inline(always)]
    pub fn zero_at(self, qzeros: &[u32], n_cols: usize, g: usize, n: usize) -> u32 {
        let p = self.per_word();
        self.field(qzeros[g * (n_cols / p) + n / p], n % p) + 1
    }
    /// Pack `values` (at most `per_word` of them, each masked to the width), the first in the low bits.
    pub fn pack(self, values: &[u32]) -> u32 {
        debug_assert!(values.len() <= self.per_word());
        values.iter().enumerate().fold(0, |w, (j, &v)| w | (v & self.max_value()) << (self.count() as usize * j))
    }
    /// The `qzeros` word of a symmetric checkpoint (AutoGPTQ's `sym: true`): every field `2^(bits - 1) - 1`, the
    /// zero point `2^(bits - 1)` stored minus one.
    pub fn symmetric_zeros(self) -> u32 {
        self.pack(&[(1 << (self.count() - 1)) - 1; 8][..self.per_word()])
    }
}

/// Values per packed 32-bit word at 4 bits.
pub const PACK: usize = Bits::Four.per_word();

/// The 4-bit value at `index` (0..8) of a packed word.
#[inline(always)]
pub const fn nibble(word: u32, index: usize) -> u32 {
    Bits::Four.field(word, index)
}

/// The 4-bit quantized weight `q[k][n]` from `qweight` given as row-major words of width `n_cols`.
#[inline(always)]
pub fn q_at(qweight: &[u32], n_cols: usize, k: usize, n: usize) -> u32 {
    Bits::Four.q_at(qweight, n_cols, k, n)
}

/// The real 4-bit zero point `zero[g][n]` (stored nibble plus one) from `qzeros` given as row-major words.
#[inline(always)]
pub fn zero_at(qzeros: &[u32], n_cols: usize, g: usize, n: usize) -> u32 {
    Bits::Four.zero_at(qzeros, n_cols, g, n)
}

/// Number of groups for `in_features` rows at `group_size` rows per group.
pub const fn groups(in_features: usize, group_size: usize) -> usize {
    in_features.div_ceil(group_size)
}

/// Pack eight 4-bit values, the first in the low bits.
pub fn pack8(values: [u32; PACK]) -> u32 {
    Bits::Four.pack(&values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_round_trip() {
        let v = [1, 15, 0, 7, 8, 3, 12, 9];
        let w = pack8(v);
        for (j, &x) in v.iter().enumerate() {
            assert_eq!(nibble(w, j), x);
        }
        // Low nibble first: the first value sits in bits 0..4.
        assert_eq!(w & 0xF, 1);
        assert_eq!(w >> 28, 9);
    }

    #[test]
    fn symmetric_zeros_hold_the_zero_point_minus_one_in_every_field() {
        assert_eq!((Bits::Four.symmetric_zeros(), Bits::Eight.symmetric_zeros()), (0x7777_7777, 0x7F7F_7F7F));
    }

    #[test]
    fn eight_bit_words_hold_four_bytes_low_byte_first() {
        let b = Bits::Eight;
        assert_eq!((b.per_word(), b.max_value()), (4, 255));
        let w = b.pack(&[0x12, 0xFF, 0, 0x80]);
        assert_eq!(w, 0x8000_FF12);
        assert_eq!([0, 1, 2, 3].map(|j| b.field(w, j)), [0x12, 0xFF, 0, 0x80]);
        // Row 4r + j of column n is byte j of qweight[r][n]: rows 5 and 7 of column 1 in a 2-column matrix.
        let qweight = [0u32, 0, 0, b.pack(&[0, 200, 0, 255])];
        assert_eq!((b.q_at(&qweight, 2, 5, 1), b.q_at(&qweight, 2, 7, 1), b.q_at(&qweight, 2, 4, 1)), (200, 255, 0));
        // Zeros: column 6 of an 8-column row is byte 2 of word 1, stored minus one (255 is a zero point of 256).
        let qzeros = [0u32, b.pack(&[0, 0, 126, 0]), 0, b.pack(&[0, 0, 255, 0])];
        assert_eq!(
            (b.zero_at(&qzeros, 8, 0, 6), b.zero_at(&qzeros, 8, 1, 6), b.zero_at(&qzeros, 8, 0, 5)),
            (127, 256, 1)
        );
    }

    #[test]
    fn widths_this_engine_reads() {
        assert_eq!(Bits::from_count(4), Some(Bits::Four));
        assert_eq!(Bits::from_count(8), Some(Bits::Eight));
        for other in [0, 1, 2, 3, 5, 6, 16, 32] {
            assert_eq!(Bits::from_count(other), None, "{other}");
        }
        // Values wider than the field are masked, never spill into the next one.
        assert_eq!(Bits::Four.pack(&[0x1F, 0]), 0xF);
    }

    #[test]
    fn zero_is_stored_minus_one() {
        // Column 9 is nibble 1 of word 1 in a row of 16 columns.
        let row = [0u32, pack8([0, 6, 0, 0, 0, 0, 0, 0])];
        assert_eq!(zero_at(&row, 16, 0, 9), 7);
        assert_eq!(zero_at(&row, 16, 0, 8), 1);
    }

    #[test]
    fn group_count_rounds_up() {
        assert_eq!(groups(4096, 128), 32);
        assert_eq!(groups(11008, 128), 86);
        assert_eq!(groups(100, 32), 4);
        assert_eq!(groups(64, 64), 1);
    }
}

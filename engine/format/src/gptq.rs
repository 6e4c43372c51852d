//! The AutoGPTQ int4 layout, as plain arithmetic.
//!
//! For a linear layer with K inputs, N outputs and group size G (`groups = ceil(K / G)`):
//! - `qweight` I32 [K/8, N]: nibble `j` (bits `4j..4j+4`, low bits first) of `qweight[r][n]` is `q[8r + j][n]`;
//! - `qzeros` I32 [groups, N/8]: nibble `j` of `qzeros[g][c]` is `zero[g][8c + j] - 1` (AutoGPTQ stores the zero
//!   point minus one, so the real zero is the stored nibble plus one);
//! - `scales` F16 [groups, N];
//! - `g_idx` I32 [K]: the group of each input row (`k / G` unless act-order permuted the rows).
//!
//! `W[k][n] = scales[g_idx[k]][n] · (q[k][n] − zero[g_idx[k]][n])` and `y = x · W`.

/// Values per packed 32-bit word.
pub const PACK: usize = 8;

/// The 4-bit value at `index` (0..8) of a packed word.
#[inline(always)]
pub const fn nibble(word: u32, index: usize) -> u32 {
    (word >> (4 * index)) & 0xF
}

/// The quantized weight `q[k][n]` from `qweight` given as row-major words of width `n_cols`.
#[inline(always)]
pub fn q_at(qweight: &[u32], n_cols: usize, k: usize, n: usize) -> u32 {
    nibble(qweight[(k / PACK) * n_cols + n], k % PACK)
}

/// The real zero point `zero[g][n]` (stored nibble plus one) from `qzeros` given as row-major words.
#[inline(always)]
pub fn zero_at(qzeros: &[u32], n_cols: usize, g: usize, n: usize) -> u32 {
    nibble(qzeros[g * (n_cols / PACK) + n / PACK], n % PACK) + 1
}

/// Number of groups for `in_features` rows at `group_size` rows per group.
pub const fn groups(in_features: usize, group_size: usize) -> usize {
    in_features.div_ceil(group_size)
}

/// Pack eight 4-bit values, the first in the low bits.
pub fn pack8(values: [u32; PACK]) -> u32 {
    let mut w = 0u32;
    let mut j = 0;
    while j < PACK {
        w |= (values[j] & 0xF) << (4 * j);
        j += 1;
    }
    w
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

// Picking the next token on the device from the logits of one row: the repetition penalty, temperature, top-k,
// top-p and min-p of Hugging Face `generate`, and a draw from a counter-based generator keyed by seed and position.
//
// The rules are the CPU sampler's (engine/src/sampling.rs) step for step and in the same arithmetic wherever it
// decides: f32 logits, penalty, temperature and exp; probability masses in 2^-40 fixed point; the top-p threshold
// and the draw in f64. So both backends pick the same token for the same seed and position, except where a
// probability sits at a boundary within one rounding of the exp (which the two libraries may round differently).
//
// Why fixed-point masses: many threads add them into shared-memory histograms at once; integer sums do not depend
// on the order of the additions, so the same logits give the same token run after run (float atomics would not),
// and the CPU, adding the same integers in another order, gets the same totals.
//
// Why one block: the work is a few passes over the logits (64000 floats, from L2): microseconds, about 1% of a
// decode step; one block needs no grid-wide synchronization, so the kernel sits in the captured decode graph
// between lm_head and decode_advance and the sampled token never leaves the device.
//
// How the thresholds are found without sorting: top-k needs the k-th largest logit and top-p the logit at which the
// mass of the larger ones reaches p. Both are a radix select over an order-preserving 32-bit key of the logit: a
// histogram of the key's top 11 bits (by count for top-k, by mass for top-p) locates the bin holding the boundary,
// the next 11 bits within that bin, then the last 10: three passes give the exact key. Ties at the top-p boundary
// are kept in id order, as the CPU's sort does.
#include "common.cuh"

// The sampler settings, written by the host before a generation (not baked into the graph).
struct SamplerConfig {
    float temperature;  // 0: greedy (the argmax of the penalized logits)
    uint32_t top_k;     // 0: off
    float top_p;        // 1: off
    float min_p;        // 0: off
    float penalty;      // 1: off
    uint32_t seed_lo;
    uint32_t seed_hi;
    uint32_t reserved;
};

struct SampleParams {
    const float* logits;           // [vocab]
    const SamplerConfig* config;
    uint32_t* seen;                // [ceil(vocab / 32)] bits: the tokens in the context (the penalty's set)
    uint32_t* token;               // in: the token this step fed, marked seen first; out: the sampled token
    const uint32_t* pos;           // the position of the row whose logits these are
    uint32_t vocab;
    uint32_t pos_offset;           // the sampled token's position, the generator's counter: *pos + pos_offset
};

namespace smp {

constexpr int THREADS = 1024;
constexpr int WARPS = THREADS / 32;
constexpr int BINS = 2048;  // the widest radix digit: 11 bits
#define SAMPLE_NEG_INF (-__int_as_float(0x7f800000))
constexpr float MASS_ONE = 1099511627776.0f;  // 2^40: a probability of 1 (relative to the largest) in fixed point

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a counter-based
// generator, so the number drawn for a position depends only on (seed, position), however the steps are
// pipelined or replayed.
ENGINE_DEV uint4 philox4x32_10(uint4 ctr, uint2 key) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        const uint32_t hi0 = __umulhi(0xD2511F53u, ctr.x), lo0 = 0xD2511F53u * ctr.x;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, ctr.z), lo1 = 0xCD9E8D57u * ctr.z;
        ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key.x += 0x9E3779B9u;
        key.y += 0xBB67AE85u;
    }
    return ctr;
}

// Uniform in [0, 1) with 53 random bits, from the first two words of the block for `position`.
ENGINE_DEV double uniform(uint32_t seed_lo, uint32_t seed_hi, uint64_t position) {
    const uint4 r = philox4x32_10(make_uint4((uint32_t)position, (uint32_t)(position >> 32), 0u, 0u),
                                  make_uint2(seed_lo, seed_hi));
    return (double)(((uint64_t)(r.x >> 5) << 26) | (r.y >> 6)) * (1.0 / 9007199254740992.0);
}

// A key whose unsigned order is the float order (-inf lowest). -0 never reaches it (adjusted logits add +0).
ENGINE_DEV uint32_t order_key(float z) {
    const uint32_t b = __float_as_uint(z);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The digit of `key` at radix level 0, 1, 2 (bits 31..21, 20..10, 9..0), and whether `key` lies in the bin chosen
// by the levels above (`prefix`: the key's bits above this level's digit).
ENGINE_DEV uint32_t digit(uint32_t key, int level) {
    return level == 0 ? key >> 21 : level == 1 ? (key >> 10) & 0x7FFu : key & 0x3FFu;
}
ENGINE_DEV bool in_prefix(uint32_t key, int level, uint32_t prefix) {
    return level == 0 || (level == 1 ? key >> 21 : key >> 10) == prefix;
}
ENGINE_DEV int digit_bins(int level) { return level == 2 ? 1024 : BINS; }
ENGINE_DEV int digit_bits(int level) { return level == 2 ? 10 : 11; }

// The settings and the row, shared by every pass.
struct Row {
    const float* logits;
    const uint32_t* seen;
    uint32_t vocab;
    bool penalize;
    float penalty;
    float inv_t;  // 1 / temperature (1 for greedy)

    // The logit of token i as the sampler sees it: NaN as -inf, the penalty, the temperature (the CPU's order
    // and operations: l / penalty or l * penalty, then l * (1 / temperature)).
    __device__ __forceinline__ float z(uint32_t i) const {
        float l = logits[i];
        if (l != l) l = SAMPLE_NEG_INF;
        if (penalize && ((seen[i >> 5] >> (i & 31)) & 1u)) l = l > 0.f ? l / penalty : l * penalty;
        return l * inv_t + 0.f;
    }
};

// Its mass relative to the largest: exp(z − zmax) in 2^-40 fixed point (truncated, as the CPU's `as u64`).
ENGINE_DEV uint64_t mass(float z, float zmax) { return __float2ull_rz(expf(z - zmax) * MASS_ONE); }

// Block-wide exclusive prefix sum of `v` in thread order; `total` gets the sum of all. Every thread calls it.
ENGINE_DEV uint64_t block_exclusive_scan(uint64_t v, uint64_t* scratch, uint64_t& total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint64_t u = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += u;
    }
    if (lane == 31) scratch[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        uint64_t w = scratch[lane], wi = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint64_t u = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o) wi += u;
        }
        scratch[lane] = wi - w;  // exclusive: the warps before
        if (lane == 31) scratch[32] = wi;
    }
    __syncthreads();
    const uint64_t out = scratch[warp] + incl - v;
    total = scratch[32];
    __syncthreads();
    return out;
}

// Add `w` into bin `bin` (skipped when `bin` is out of range or `w` is 0). Neighbouring lanes often share a bin
// (logits of similar size share their top key bits), so the lanes of one bin add their weights first (two 20-bit
// halves, each warp sum fits 32 bits) and one of them does the atomic: fewer colliding shared-memory atomics.
// All 32 lanes must call it.
ENGINE_DEV void hist_add(unsigned long long* hist, uint32_t bin, uint64_t w, uint32_t nbins) {
    const uint32_t peers = __match_any_sync(0xffffffffu, bin);
    const uint32_t lo = __reduce_add_sync(peers, (uint32_t)(w & 0xFFFFFu));
    const uint32_t hi = __reduce_add_sync(peers, (uint32_t)(w >> 20));
    const int lane = threadIdx.x & 31;
    if (lane == __ffs(peers) - 1 && bin < nbins && (lo | hi)) {
        atomicAdd(hist + bin, ((unsigned long long)hi << 20) + lo);
    }
}

// The bin b of `hist` (bins [0, nbins), higher bins = larger keys) where the weight above it plus `base` is below
// `target` and reaches it with b: (double)(base + above(b)) < target <= (double)(base + above(b) + hist[b]).
// Returns b in `out_bin` and base + above(b) in `out_above` (shared), and the sum of every bin.
ENGINE_DEV uint64_t select_bin(const unsigned long long* hist, int nbins, uint64_t base, double target,
                               uint64_t* scratch, uint32_t* out_bin, uint64_t* out_above) {
    // Thread t takes bins hi = nbins - 1 - 2t and hi - 1: thread order is descending key order.
    const int t = threadIdx.x, hi_bin = nbins - 1 - 2 * t;
    const uint64_t h_hi = hi_bin >= 0 ? hist[hi_bin] : 0, h_lo = hi_bin >= 1 ? hist[hi_bin - 1] : 0;
    uint64_t total;
    const uint64_t above = base + block_exclusive_scan(h_hi + h_lo, scratch, total);
    if (hi_bin >= 0 && (double)above < target && target <= (double)(above + h_hi)) {
        *out_bin = hi_bin, *out_above = above;
    } else if (hi_bin >= 1 && (double)(above + h_hi) < target && target <= (double)(above + h_hi + h_lo)) {
        *out_bin = hi_bin - 1, *out_above = above + h_hi;
    }
    __syncthreads();
    return total;
}

// One radix level: the histogram of `level`'s digit over the keys in `prefix` that are >= `key_floor`, weighted
// by count (mass = false) or by mass (zmax given).
ENGINE_DEV void level_histogram(const Row& row, unsigned long long* hist, int level, uint32_t prefix,
                                uint32_t key_floor, bool by_mass, float zmax) {
    const int nbins = digit_bins(level);
    for (int b = threadIdx.x; b < BINS; b += THREADS) hist[b] = 0;
    __syncthreads();
    for (uint32_t base = 0; base < row.vocab; base += THREADS) {
        const uint32_t i = base + threadIdx.x;
        uint32_t bin = BINS;  // none
        uint64_t w = 0;
        if (i < row.vocab) {
            const float z = row.z(i);
            const uint32_t key = order_key(z);
            if (key >= key_floor && in_prefix(key, level, prefix)) {
                bin = digit(key, level);
                w = by_mass ? mass(z, zmax) : 1;
            }
        }
        hist_add(hist, bin, w, nbins);
    }
    __syncthreads();
}

// The exact key at which the weight of the larger keys (from `key_floor` up) reaches `target`, and that weight
// (the keys strictly above it), by three radix levels. With `level0_ready`, `hist` already holds level 0.
ENGINE_DEV uint32_t radix_select(const Row& row, unsigned long long* hist, uint64_t* scratch, uint32_t* sel_bin,
                                 uint64_t* sel_above, uint32_t key_floor, bool by_mass, float zmax, double target,
                                 bool level0_ready, uint64_t& above) {
    uint32_t prefix = 0;
    uint64_t base = 0;
    for (int level = 0; level < 3; ++level) {
        if (level > 0 || !level0_ready) level_histogram(row, hist, level, prefix, key_floor, by_mass, zmax);
        select_bin(hist, digit_bins(level), base, target, scratch, sel_bin, sel_above);
        prefix = (prefix << digit_bits(level)) | *sel_bin;
        base = *sel_above;
        __syncthreads();
    }
    above = base;
    return prefix;
}

}  // namespace smp

// One block of 1024 threads. Reads logits[vocab] (as lm_head left them), the settings and the penalty set; writes
// the token into *token. Deterministic: the same inputs give the same token.
extern "C" __global__ void __launch_bounds__(1024, 1) sample_token(const SampleParams p) {
    using namespace smp;
    __shared__ unsigned long long hist[BINS];
    __shared__ uint64_t scratch[33];
    __shared__ uint32_t sel_bin;
    __shared__ uint64_t sel_above;
    __shared__ float red_v[WARPS];
    __shared__ uint32_t red_i[WARPS];
    __shared__ uint32_t chosen;
    pdl_wait();
    const SamplerConfig c = *p.config;
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool penalize = c.penalty != 1.f;
    // The token this step fed is in the context from now on: the penalty's set gains it.
    if (tid == 0 && penalize) {
        const uint32_t t = *p.token;
        if (t < p.vocab) atomicOr(p.seen + (t >> 5), 1u << (t & 31));
    }
    __syncthreads();
    pdl_launch_dependents();
    const bool greedy = c.temperature == 0.f || c.top_k == 1;
    const Row row{p.logits, p.seen, p.vocab, penalize, c.penalty, greedy ? 1.f : 1.f / c.temperature};

    // The largest z and its first id (ids ascend within a thread, so `>` keeps each thread's first).
    float best = SAMPLE_NEG_INF;
    uint32_t best_i = 0xFFFFFFFFu;
    for (uint32_t i = tid; i < p.vocab; i += THREADS) {
        const float z = row.z(i);
        if (z > best) best = z, best_i = i;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, best_i, o);
        if (ov > best || (ov == best && oi < best_i)) best = ov, best_i = oi;
    }
    if (lane == 0) red_v[warp] = best, red_i[warp] = best_i;
    __syncthreads();
    best = red_v[0], best_i = red_i[0];
    for (int w = 1; w < WARPS; ++w)
        if (red_v[w] > best || (red_v[w] == best && red_i[w] < best_i)) best = red_v[w], best_i = red_i[w];
    const float zmax = best;
    // Greedy, or nothing to weigh (every logit -inf, or an infinite one): the first largest (0 if none).
    if (greedy || !(zmax > SAMPLE_NEG_INF && zmax < -SAMPLE_NEG_INF)) {
        if (tid == 0) *p.token = best_i == 0xFFFFFFFFu ? 0 : best_i;
        return;
    }

    // Top-k: every z >= the k-th largest survives (ties at the boundary too).
    uint32_t key_k = 0;
    if (c.top_k > 0 && c.top_k < p.vocab) {
        uint64_t above;
        key_k =
            radix_select(row, hist, scratch, &sel_bin, &sel_above, 0, false, zmax, (double)c.top_k, false, above);
    }

    // Top-p over the top-k survivors: keep the tokens, largest first (ties by id), while the mass of the larger ones
    // is below p of the survivors' mass. key_p: the boundary key; n_tie: how many of the ties at it survive.
    uint32_t key_p = 0, n_tie = 0xFFFFFFFFu;
    if (c.top_p < 1.f) {
        level_histogram(row, hist, 0, 0, key_k, true, zmax);
        uint64_t z_total;
        // The level-0 histogram's total is the survivors' mass Z; the target is p · Z.
        {
            const int t = tid, hi_bin = BINS - 1 - 2 * t;
            uint64_t v = (hi_bin >= 0 ? hist[hi_bin] : 0) + (hi_bin >= 1 ? hist[hi_bin - 1] : 0);
            block_exclusive_scan(v, scratch, z_total);
        }
        const double target = (double)c.top_p * (double)z_total;
        uint64_t above;
        key_p = radix_select(row, hist, scratch, &sel_bin, &sel_above, key_k, true, zmax, target, true, above);
        // The ties at key_p all have the same mass m; the j-th (in id order) survives while above + j·m < target.
        if (tid == 0) {
            const float zp = __uint_as_float((key_p & 0x80000000u) ? (key_p & 0x7FFFFFFFu) : ~key_p);
            const uint64_t m = mass(zp, zmax);
            uint32_t lo = 1, hi = p.vocab;  // the first j that fails (j = 0 always survives: above < target)
            while (lo < hi) {
                const uint32_t mid = lo + (hi - lo) / 2;
                if ((double)(above + (uint64_t)mid * m) < target) lo = mid + 1;
                else hi = mid;
            }
            chosen = lo;
        }
        __syncthreads();
        n_tie = chosen;
        __syncthreads();
    }

    // The draw: in id order over the survivors (top-k, top-p, and min-p: mass >= min_p of the largest's), the first
    // token at which the cumulative mass passes u · (their total). Each thread takes a contiguous run of ids.
    const uint32_t run = (p.vocab + THREADS - 1) / THREADS;
    const uint32_t begin = min(tid * run, p.vocab), end = min(begin + run, p.vocab);
    const float min_e = c.min_p;
    uint64_t ties_here = 0;
    for (uint32_t i = begin; i < end; ++i) ties_here += order_key(row.z(i)) == key_p;
    uint64_t ties_total;
    const uint64_t tie0 = block_exclusive_scan(ties_here, scratch, ties_total);
    uint64_t kept = 0;
    {
        uint64_t j = tie0;
        for (uint32_t i = begin; i < end; ++i) {
            const float z = row.z(i);
            const uint32_t key = order_key(z);
            bool keep = key >= key_k && (key > key_p || (key == key_p && j < n_tie));
            j += key == key_p;
            if (keep && min_e > 0.f) keep = expf(z - zmax) >= min_e;
            if (keep) kept += mass(z, zmax);
        }
    }
    uint64_t kept_total;
    const uint64_t kept0 = block_exclusive_scan(kept, scratch, kept_total);
    const double u = uniform(c.seed_lo, c.seed_hi, (uint64_t)*p.pos + p.pos_offset);
    const uint64_t target = (uint64_t)(u * (double)kept_total);
    if (tid == 0) chosen = best_i;  // kept_total is never 0 (the largest has mass 2^40); a guard all the same
    __syncthreads();
    if (kept0 <= target && target < kept0 + kept) {
        uint64_t acc = kept0, j = tie0;
        for (uint32_t i = begin; i < end; ++i) {
            const float z = row.z(i);
            const uint32_t key = order_key(z);
            bool keep = key >= key_k && (key > key_p || (key == key_p && j < n_tie));
            j += key == key_p;
            if (keep && min_e > 0.f) keep = expf(z - zmax) >= min_e;
            if (!keep) continue;
            acc += mass(z, zmax);
            if (target < acc) {
                chosen = i;
                break;
            }
        }
    }
    __syncthreads();
    if (tid == 0) *p.token = chosen;
}

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
// Why one block: the work is a few passes over the logits (64000 floats, from L2); one block needs no grid-wide
// synchronization, so the kernel sits in the captured decode graph between lm_head and decode_advance and the
// sampled token never leaves the device. Every pass reads 16 bytes per lane with two loads in flight before their
// first use, so that one SM streams the row instead of waiting a round trip per element.
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
constexpr float MASS_ONE = 1099511627776.0f;  // 2^40: a probability of 1 (relative to the largest) in fixed point
#define SAMPLE_NEG_INF (-__int_as_float(0x7f800000))

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
ENGINE_DEV float key_value(uint32_t key) {
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key);
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
    const float* logits;  // 16-byte aligned (a workspace buffer)
    const uint32_t* seen;
    uint32_t vocab;
    bool penalize;
    float penalty;
    float inv_t;  // 1 / temperature (1 for greedy)

    // A logit as the sampler sees it: NaN as -inf, the penalty if `penalized`, the temperature (the CPU's order
    // and operations: l / penalty or l * penalty, then l * (1 / temperature)).
    __device__ __forceinline__ float adjust(float l, uint32_t penalized) const {
        if (l != l) l = SAMPLE_NEG_INF;
        if (penalized) l = l > 0.f ? l / penalty : l * penalty;
        return l * inv_t + 0.f;
    }
    __device__ __forceinline__ float z(uint32_t i) const {
        return adjust(logits[i], penalize ? (seen[i >> 5] >> (i & 31)) & 1u : 0u);
    }
    // Tokens 4c .. 4c + 3 (all inside the vocabulary): one 16-byte load and one penalty word.
    __device__ __forceinline__ float4 z4(uint32_t c) const {
        const float4 l = reinterpret_cast<const float4*>(logits)[c];
        const uint32_t bits = penalize ? seen[c >> 3] >> ((c & 7) * 4) : 0u;
        return make_float4(adjust(l.x, bits & 1u), adjust(l.y, (bits >> 1) & 1u), adjust(l.z, (bits >> 2) & 1u),
                           adjust(l.w, (bits >> 3) & 1u));
    }
};

// Calls f(i, z, valid) for every token, each thread taking 4-token chunks strided over the block, two chunks (two
// 16-byte loads in flight) per round. Every lane makes the same number of calls (past the end with valid = false),
// so `f` may use warp-wide operations.
template <class F>
ENGINE_DEV void each_token(const Row& row, F f) {
    const uint32_t chunks = row.vocab / 4;
    for (uint32_t base = 0; base * 4 < row.vocab; base += 2 * THREADS) {
        const uint32_t c0 = base + threadIdx.x, c1 = c0 + THREADS;
        const float4 a = c0 < chunks ? row.z4(c0) : make_float4(0.f, 0.f, 0.f, 0.f);
        const float4 b = c1 < chunks ? row.z4(c1) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const uint32_t c = h == 0 ? c0 : c1;
            const float4 v = h == 0 ? a : b;
            if (c < chunks) {
                f(4 * c, v.x, true), f(4 * c + 1, v.y, true), f(4 * c + 2, v.z, true), f(4 * c + 3, v.w, true);
            } else {
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const uint32_t i = 4 * c + j;
                    const bool valid = i < row.vocab && c == chunks;  // the tail after the last whole chunk
                    f(i, valid ? row.z(i) : 0.f, valid);
                }
            }
        }
    }
}

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

// A histogram of 64-bit weights kept as two 32-bit halves, because shared-memory atomics are native for 32 bits
// (64-bit ones loop on compare-and-swap): the adder that wraps the low word carries into the high one, so the sums
// are exact whatever the order of the additions. Counts never reach the high word.
struct Hist {
    uint32_t lo[BINS];
    uint32_t hi[BINS];
    __device__ __forceinline__ void clear() {
        for (int b = threadIdx.x; b < BINS; b += THREADS) lo[b] = 0, hi[b] = 0;
    }
    __device__ __forceinline__ uint64_t at(int b) const { return ((uint64_t)hi[b] << 32) | lo[b]; }
    __device__ __forceinline__ void add(uint32_t b, uint64_t w) {
        const uint32_t w_lo = (uint32_t)w, old = atomicAdd(&lo[b], w_lo);
        const uint32_t carry = old + w_lo < old, w_hi = (uint32_t)(w >> 32) + carry;
        if (w_hi) atomicAdd(&hi[b], w_hi);
    }
};

// Where a radix level landed: the bin, the weight above it, and the bin's own weight.
struct Selected {
    uint32_t bin;
    uint64_t above;
    uint64_t weight;
};

// The bin b of `hist` (bins [0, nbins), higher bins = larger keys) where the weight above it plus `base` is below
// `target` and reaches it with b: (double)(base + above(b)) < target <= (double)(base + above(b) + hist[b]).
// Writes it to `out` (shared) and returns the sum of every bin.
ENGINE_DEV uint64_t select_bin(const Hist& hist, int nbins, uint64_t base, double target, uint64_t* scratch,
                               Selected* out) {
    // Thread t takes bins hi = nbins - 1 - 2t and hi - 1: thread order is descending key order.
    const int t = threadIdx.x, hi_bin = nbins - 1 - 2 * t;
    const uint64_t h_hi = hi_bin >= 0 ? hist.at(hi_bin) : 0, h_lo = hi_bin >= 1 ? hist.at(hi_bin - 1) : 0;
    uint64_t total;
    const uint64_t above = base + block_exclusive_scan(h_hi + h_lo, scratch, total);
    if (hi_bin >= 0 && (double)above < target && target <= (double)(above + h_hi)) {
        *out = Selected{(uint32_t)hi_bin, above, h_hi};
    } else if (hi_bin >= 1 && (double)(above + h_hi) < target && target <= (double)(above + h_hi + h_lo)) {
        *out = Selected{(uint32_t)hi_bin - 1, above + h_hi, h_lo};
    }
    __syncthreads();
    return total;
}

// One radix level: the histogram of `level`'s digit over the keys in `prefix` that are >= `key_floor`, weighted
// by count (by_mass false) or by mass.
ENGINE_DEV void level_histogram(const Row& row, Hist& hist, int level, uint32_t prefix, uint32_t key_floor,
                                bool by_mass, float zmax) {
    hist.clear();
    __syncthreads();
    // One atomic per counted token: aggregating a warp's lanes per bin first (match + reduce) measured several
    // times slower than the collisions it saves.
    each_token(row, [&](uint32_t, float z, bool valid) {
        const uint32_t key = order_key(z);
        if (!(valid && key >= key_floor && in_prefix(key, level, prefix))) return;
        const uint64_t w = by_mass ? mass(z, zmax) : 1;
        if (w) hist.add(digit(key, level), w);
    });
    __syncthreads();
}

// The exact key at which the weight of the larger keys (from `key_floor` up) reaches `target`, by three radix
// levels; `sel` ends holding that key's own weight and the weight strictly above it. With `level0_ready`, `hist`
// already holds level 0.
ENGINE_DEV uint32_t radix_select(const Row& row, Hist& hist, uint64_t* scratch, Selected* sel, uint32_t key_floor,
                                 bool by_mass, float zmax, double target, bool level0_ready) {
    uint32_t prefix = 0;
    uint64_t base = 0;
    for (int level = 0; level < 3; ++level) {
        if (level > 0 || !level0_ready) level_histogram(row, hist, level, prefix, key_floor, by_mass, zmax);
        select_bin(hist, digit_bins(level), base, target, scratch, sel);
        prefix = (prefix << digit_bits(level)) | sel->bin;
        base = sel->above;
        __syncthreads();
    }
    return prefix;
}

}  // namespace smp

// One block of 1024 threads. Reads logits[vocab] (as lm_head left them; 16-byte aligned), the settings and the
// penalty set; writes the token into *token. Deterministic: the same inputs give the same token.
extern "C" __global__ void __launch_bounds__(1024, 1) sample_token(const SampleParams p) {
    using namespace smp;
    __shared__ Hist hist;
    __shared__ uint64_t scratch[33];
    __shared__ Selected sel;
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

    // The largest z and its first id.
    float best = SAMPLE_NEG_INF;
    uint32_t best_i = 0xFFFFFFFFu;
    each_token(row, [&](uint32_t i, float z, bool valid) {
        if (valid && (z > best || (z == best && i < best_i && z > SAMPLE_NEG_INF))) best = z, best_i = i;
    });
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
        key_k = radix_select(row, hist, scratch, &sel, 0, false, zmax, (double)c.top_k, false);
    }

    // Top-p over the top-k survivors: keep the tokens, largest first (ties by id), while the mass of the larger ones
    // is below p of the survivors' mass. key_p: the boundary key; n_tie: how many of the ties at it survive (in id
    // order); all_ties: whether that is all of them.
    uint32_t key_p = 0, n_tie = 0xFFFFFFFFu;
    bool all_ties = true;
    if (c.top_p < 1.f) {
        level_histogram(row, hist, 0, 0, key_k, true, zmax);
        uint64_t z_total;  // the level-0 histogram's total: the survivors' mass Z
        {
            const int hi_bin = BINS - 1 - 2 * (int)tid;
            block_exclusive_scan((hi_bin >= 0 ? hist.at(hi_bin) : 0) + (hi_bin >= 1 ? hist.at(hi_bin - 1) : 0),
                                 scratch, z_total);
        }
        const double target = (double)c.top_p * (double)z_total;
        key_p = radix_select(row, hist, scratch, &sel, key_k, true, zmax, target, true);
        // The ties at key_p all have the same mass m; the j-th (in id order) survives while above + j·m < target.
        if (tid == 0) {
            const uint64_t m = mass(key_value(key_p), zmax), above = sel.above;
            uint32_t lo = 1, hi = p.vocab;  // the first j that fails (j = 0 always survives: above < target)
            while (lo < hi) {
                const uint32_t mid = lo + (hi - lo) / 2;
                if ((double)(above + (uint64_t)mid * m) < target) lo = mid + 1;
                else hi = mid;
            }
            // The bin's weight is m times the number of ties (m > 0: a bin of weight 0 is never selected).
            red_i[0] = lo;
            red_i[1] = (uint64_t)lo * m >= sel.weight;
        }
        __syncthreads();
        n_tie = red_i[0];
        all_ties = red_i[1];
        __syncthreads();
    }

    // The draw: in id order over the survivors (top-k, top-p, and min-p: mass >= min_p of the largest's), the first
    // token at which the cumulative mass passes u · (their total). Each thread takes a contiguous run of ids (a
    // multiple of 4, so its loads are whole chunks), for the prefix sums in id order.
    const uint32_t run = 4 * ((p.vocab / 4 + THREADS) / THREADS);
    const uint32_t begin = min(tid * run, p.vocab), end = min(begin + run, p.vocab);
    const float min_e = c.min_p;
    // How many ties at key_p come before this thread's run (only needed when some of them are cut).
    uint64_t tie0 = 0;
    if (!all_ties) {
        uint64_t ties_here = 0, ties_total;
        for (uint32_t i = begin; i < end; ++i) ties_here += order_key(row.z(i)) == key_p;
        tie0 = block_exclusive_scan(ties_here, scratch, ties_total);
    }
    auto survives = [&](float z, uint64_t& j) {
        const uint32_t key = order_key(z);
        bool keep = key >= key_k && (key > key_p || (key == key_p && (all_ties || j < n_tie)));
        j += key == key_p;
        if (keep && min_e > 0.f) keep = expf(z - zmax) >= min_e;
        return keep;
    };
    uint64_t kept = 0;
    {
        uint64_t j = tie0;
        uint32_t i = begin;
        for (; i + 4 <= end; i += 4) {
            const float4 z = row.z4(i / 4);
            if (survives(z.x, j)) kept += mass(z.x, zmax);
            if (survives(z.y, j)) kept += mass(z.y, zmax);
            if (survives(z.z, j)) kept += mass(z.z, zmax);
            if (survives(z.w, j)) kept += mass(z.w, zmax);
        }
        for (; i < end; ++i) {
            const float z = row.z(i);
            if (survives(z, j)) kept += mass(z, zmax);
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
            if (!survives(z, j)) continue;
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

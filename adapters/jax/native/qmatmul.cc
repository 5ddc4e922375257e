// modelport's quantized matrix product for XLA's CPU backend (an XLA FFI handler,
// registered by ../kernels.py, which compiles this file once per CPU).
//
//   y[m, n] = sum_k x[m, k] * w[n, k],   w[n, 32 g + j] = scale[n, g] * q + offset[n, g]
//
// x: float32 (M, K), a few rows (the decode step's slots). w: the rows of a
// quantized matrix, blocks of 32 along K (adapters/jax/quant.py's layout):
//   int8: values int8 (N, K), scales (N, K / 32), no offsets;
//   int4: values uint8 (N, K / 2), per block 16 bytes, byte j holding value j in its
//         low nibble and value j + 16 in its high one; scales and offsets (N, K / 32).
//
// llama.cpp's arithmetic: each row of x is quantized too, per block of 32, to int8
// with the scale max|x| / 127 (its Q8_0), so a block's products are integer dot
// products, exact in int32, scaled once per block:
//
//   y[m, n] = sum_g scale[n, g] * xscale[m, g] * dot(q[n, g], xq[m, g])
//             + sum_g offset[n, g] * xsum[m, g]          (int4; xsum: the float sum)
//
// With AVX-512 VNNI, vpdpbusd multiplies 64 byte pairs into 16 int32 sums in one
// instruction, so a step is bound by reading the weights, not by widening them to
// float. Elsewhere a portable loop computes the same integer dot products (the
// compiler vectorizes it for the CPU it targets), so both give the same numbers up
// to the order of the float sums.
//
// Every row of x goes through the same operations whatever the number of rows, so
// a slot's result does not depend on its neighbours. The N rows of w are cut into
// chunks that XLA's intra-op thread pool and the calling thread take in turn (an
// atomic counter): whoever is free takes the next chunk, and the caller never waits
// for a chunk nobody has started, so a busy pool cannot stall it.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define MODELPORT_VNNI 1
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kMaxRows = 8;    // rows of x done per pass over the weights
constexpr int64_t kTileRows = 16;  // weight rows that meet all of x in turn

// Two blocks of one row of x, quantized: 64 int8 values and their scales, 8 lanes
// a block (the lanes of vpdpbusd's 16 int32 sums). A pair past the last block is
// zeros.
struct alignas(64) PackedPair {
  int8_t q[2 * kBlock];
  float scale[16];
};

// The rows of x quantized per block of 32, pair by pair with the rows of a pair
// side by side (pair p of row r at p * m + r), and each block's float sum.
struct QuantizedX {
  int64_t m, k, groups, pairs;
  std::vector<PackedPair> packed;  // (pairs, m)
  std::vector<float> sum;          // (m, groups)

  QuantizedX(const float* x, int64_t m_, int64_t k_)
      : m(m_), k(k_), groups(k_ / kBlock), pairs((groups + 1) / 2), packed(pairs * m_), sum(m_ * groups) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const float* v = x + r * k + g * kBlock;
        float amax = 0.f, s = 0.f;
        for (int64_t j = 0; j < kBlock; ++j) {
          amax = std::max(amax, std::fabs(v[j]));
          s += v[j];
        }
        const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        PackedPair& pair = packed[(g / 2) * m + r];
        const int half = static_cast<int>(g % 2);
        for (int64_t j = 0; j < kBlock; ++j) pair.q[half * kBlock + j] = static_cast<int8_t>(std::nearbyint(v[j] * id));
        std::fill(pair.scale + half * 8, pair.scale + half * 8 + 8, d);
        sum[r * groups + g] = s;
      }
    if (groups % 2)  // the last pair's second block: zeros
      for (int64_t r = 0; r < m; ++r) {
        PackedPair& pair = packed[(pairs - 1) * m + r];
        std::fill(pair.q + kBlock, pair.q + 2 * kBlock, 0);
        std::fill(pair.scale + 8, pair.scale + 16, 0.f);
      }
  }
};

struct Weights {
  const uint8_t* values;
  const float* scales;
  const float* offsets;  // null for int8
  int64_t n, k;
};

// sum_g offset[i, g] * xsum[r, g]: the int4 blocks' offsets against x's block sums.
inline float offset_term(const Weights& w, const QuantizedX& x, int64_t i, int64_t r) {
  if (!w.offsets) return 0.f;
  const float* o = w.offsets + i * x.groups;
  const float* s = x.sum.data() + r * x.groups;
  float t = 0.f;
#pragma omp simd reduction(+ : t)
  for (int64_t g = 0; g < x.groups; ++g) t += o[g] * s[g];
  return t;
}

#ifdef MODELPORT_VNNI

// Two blocks of a weight row as vpdpbusd's unsigned operand, and a mask of the
// bytes whose x must change sign: int8 weights as |w|, with x negated where w < 0;
// int4 nibbles (0..15) as they are. Not Whole: only the first block is there.
template <int Bits, bool Whole>
inline __m512i pair_weights(const uint8_t* at, __mmask64* negative) {
  if (Bits == 8) {
    const __m512i w = Whole ? _mm512_loadu_si512(at) : _mm512_maskz_loadu_epi8(0xFFFFFFFFull, at);
    *negative = _mm512_movepi8_mask(w);
    return _mm512_abs_epi8(w);
  }
  // 16 bytes a block: [b0 b1] -> [b0 & 15, b0 >> 4, b1 & 15, b1 >> 4] by 128-bit lane
  const __m256i packed = Whole ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at))
                               : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)));
  const __m512i both = _mm512_shuffle_i64x2(_mm512_castsi256_si512(packed), _mm512_castsi256_si512(packed), 0x50);
  const __m512i nibble = _mm512_set1_epi8(15);
  *negative = 0;
  return _mm512_mask_blend_epi64(0xCC, _mm512_and_si512(both, nibble),
                                 _mm512_and_si512(_mm512_srli_epi16(both, 4), nibble));
}

// One pair of blocks of weight row i against R rows of x: acc[r] += the 16 lanes.
template <int R, int Bits, bool Whole>
inline void pair_step(const uint8_t* at, const float* ws, const PackedPair* xp, __m512* acc) {
  __mmask64 negative;
  const __m512i weights = pair_weights<Bits, Whole>(at, &negative);
  // lanes 0-7: the first block's scale, lanes 8-15: the second's
  const __m512i lane_pair = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m128 two = Whole ? _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(ws))) : _mm_load_ss(ws);
  const __m512 wscale = _mm512_permutexvar_ps(lane_pair, _mm512_castps128_ps512(two));
  for (int r = 0; r < R; ++r) {
    __m512i xv = _mm512_load_si512(xp[r].q);
    if (Bits == 8) xv = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), weights, xv);
    acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_load_ps(xp[r].scale)), wscale, acc[r]);
  }
}

template <int R, int Bits>
void rows_kernel(const QuantizedX& x, int64_t first, const Weights& w, int64_t begin, int64_t end, float* y) {
  const int64_t full = x.groups / 2, pair_bytes = Bits == 8 ? 2 * kBlock : kBlock;
  const int64_t row_bytes = Bits == 8 ? x.k : x.k / 2;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* row = w.values + i * row_bytes;
    const float* ws = w.scales + i * x.groups;
    const PackedPair* xp = x.packed.data() + first;
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t p = 0; p < full; ++p, xp += x.m) pair_step<R, Bits, true>(row + p * pair_bytes, ws + 2 * p, xp, acc);
    if (x.groups % 2) pair_step<R, Bits, false>(row + full * pair_bytes, ws + 2 * full, xp, acc);
    for (int r = 0; r < R; ++r) y[r * w.n + i] = _mm512_reduce_add_ps(acc[r]) + offset_term(w, x, i, first + r);
  }
}

#else  // portable C++: the compiler vectorizes the integer dot products for the CPU it targets

template <int R, int Bits>
void rows_kernel(const QuantizedX& x, int64_t first, const Weights& w, int64_t begin, int64_t end, float* y) {
  const int64_t groups = x.groups;
  const int64_t row_bytes = Bits == 8 ? x.k : x.k / 2;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* row = w.values + i * row_bytes;
    float acc[R] = {};
    for (int64_t g = 0; g < groups; ++g) {
      int8_t q[kBlock];
      if (Bits == 8) {
        const int8_t* p = reinterpret_cast<const int8_t*>(row + g * kBlock);
        for (int j = 0; j < kBlock; ++j) q[j] = p[j];
      } else {
        const uint8_t* p = row + g * kBlock / 2;
        for (int j = 0; j < kBlock / 2; ++j) {
          q[j] = static_cast<int8_t>(p[j] & 15);
          q[j + kBlock / 2] = static_cast<int8_t>(p[j] >> 4);
        }
      }
      const float ws = w.scales[i * groups + g];
      const PackedPair* xp = x.packed.data() + (g / 2) * x.m + first;
      const int half = static_cast<int>(g % 2);
      for (int r = 0; r < R; ++r) {
        const int8_t* xq = xp[r].q + half * kBlock;
        int32_t dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < kBlock; ++j) dot += static_cast<int32_t>(q[j]) * static_cast<int32_t>(xq[j]);
        acc[r] += ws * xp[r].scale[half * 8] * static_cast<float>(dot);
      }
    }
    for (int r = 0; r < R; ++r) y[r * w.n + i] = acc[r] + offset_term(w, x, i, first + r);
  }
}

#endif

using Kernel = void (*)(const QuantizedX&, int64_t, const Weights&, int64_t, int64_t, float*);

template <int Bits>
Kernel kernel_for(int64_t rows) {
  switch (rows) {
    case 1: return rows_kernel<1, Bits>;
    case 2: return rows_kernel<2, Bits>;
    case 3: return rows_kernel<3, Bits>;
    case 4: return rows_kernel<4, Bits>;
    case 5: return rows_kernel<5, Bits>;
    case 6: return rows_kernel<6, Bits>;
    case 7: return rows_kernel<7, Bits>;
    default: return rows_kernel<8, Bits>;
  }
}

// One call's work, shared with the pool's tasks (which may start after the call
// has returned, find nothing left, and only drop their reference).
struct Work {
  QuantizedX x;
  Weights w;
  float* y;
  int bits;
  int64_t chunk, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  Work(const float* x_, int64_t m, int64_t k, const Weights& w_, float* y_, int bits_)
      : x(x_, m, k), w(w_), y(y_), bits(bits_) {}

  // A few weight rows at a time meet every row of x while they are in L1 (a
  // prefill's many rows), so the weights are read from memory once per call.
  void run_chunk(int64_t c) {
    const int64_t begin = c * chunk, end = std::min(w.n, begin + chunk);
    for (int64_t i = begin; i < end; i += kTileRows)
      for (int64_t r0 = 0; r0 < x.m; r0 += kMaxRows) {
        const int64_t rows = std::min(kMaxRows, x.m - r0);
        Kernel kernel = bits == 8 ? kernel_for<8>(rows) : kernel_for<4>(rows);
        kernel(x, r0, w, i, std::min(end, i + kTileRows), y + r0 * w.n);
      }
  }

  void take_chunks() {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
      run_chunk(c);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error qmatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer values, ffi::Buffer<ffi::F32> scales,
                   ffi::Buffer<ffi::F32> offsets, ffi::ResultBuffer<ffi::F32> y, int64_t bits) {
  const auto xd = x.dimensions(), sd = scales.dimensions();
  if (xd.size() != 2 || sd.size() != 2) return ffi::Error::InvalidArgument("qmatmul: x and scales must be 2-d");
  const int64_t m = xd[0], k = xd[1], n = sd[0];
  if (sd[1] * kBlock != k || (bits != 8 && bits != 4))
    return ffi::Error::InvalidArgument("qmatmul: the blocks do not match x");
  const Weights w{static_cast<const uint8_t*>(values.untyped_data()), scales.typed_data(),
                  bits == 4 ? offsets.typed_data() : nullptr, n, k};
  auto work = std::make_shared<Work>(x.typed_data(), m, k, w, y->typed_data(), static_cast<int>(bits));
  // Chunks of whole cache lines of y, a few per thread so that a late thread
  // still finds work; small matrices stay on the calling thread.
  const int64_t helpers = std::max<int64_t>(0, pool.num_threads() - 1);
  const int64_t bytes = n * (bits == 8 ? k : k / 2);
  const int64_t ways = bytes < (1 << 18) ? 1 : 4 * (helpers + 1);
  const int64_t per_way = ((n + ways - 1) / ways + 15) / 16 * 16;
  work->chunk = std::max<int64_t>(16, per_way);
  work->chunks = (n + work->chunk - 1) / work->chunk;
  for (int64_t h = 0; h < std::min(helpers, work->chunks - 1); ++h) pool.Schedule([work] { work->take_chunks(); });
  work->take_chunks();
  while (work->done.load(std::memory_order_acquire) < work->chunks) {
#ifdef MODELPORT_VNNI
    _mm_pause();
#endif
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ModelportQMatmul, qmatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("bits"));

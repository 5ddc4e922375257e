// modelport's quantized matrix-vector product for XLA's CPU backend (an XLA FFI
// handler, registered by ../kernels.py, which compiles this file once per CPU).
//
//   y[m, n] = sum_k x[m, k] * w[n, k],   w[n, 32 g + j] = scale[n, g] * q + offset[n, g]
//
// x: float32 (M, K), a few rows (the decode step's slots). w: the rows of a
// quantized matrix, blocks of 32 along K (adapters/jax/quant.py's layout):
//   int8: values int8 (N, K), scales (N, K / 32), no offsets;
//   int4: values uint8 (N, K / 2), per block 16 bytes, byte j holding value j in its
//         low nibble and value j + 16 in its high one; scales and offsets (N, K / 32).
//
// XLA's own CPU code writes a dequantized float copy of the matrix and then
// multiplies; here every weight byte is read once, converted in registers and
// multiplied with all M rows of x, so a step costs the int8 or int4 bytes.
// The N rows are cut into chunks that XLA's intra-op thread pool and the calling
// thread take in turn (an atomic counter): whoever is free takes the next chunk,
// and the caller never waits for a chunk nobody has started, so a busy pool
// cannot stall it.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MODELPORT_AVX512 1
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kMaxRows = 8;  // rows of x done per pass over the weights

// Sums of each block of 32 of each row of x (for the int4 offsets).
void block_sums(const float* x, int64_t rows, int64_t k, float* sums) {
  const int64_t groups = k / kBlock;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.f;
      for (int64_t j = 0; j < kBlock; ++j) s += x[m * k + g * kBlock + j];
      sums[m * groups + g] = s;
    }
}

#ifdef MODELPORT_AVX512

template <int R, int Bits>
void rows_kernel(const float* x, int64_t k, const uint8_t* values, const float* scales, const float* offsets,
                 const float* sums, int64_t n, int64_t begin, int64_t end, float* y) {
  const int64_t groups = k / kBlock;
  const int64_t row_bytes = Bits == 8 ? k : k / 2;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* q = values + i * row_bytes;
    const float* s = scales + i * groups;
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    float off[R] = {};
    for (int64_t g = 0; g < groups; ++g) {
      __m512 lo, hi;
      if (Bits == 8) {
        const __m128i* p = reinterpret_cast<const __m128i*>(q + g * kBlock);
        lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p)));
        hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p + 1)));
      } else {
        const __m512i bytes =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + g * kBlock / 2)));
        lo = _mm512_cvtepi32_ps(_mm512_and_si512(bytes, _mm512_set1_epi32(15)));
        hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4));
      }
      const __m512 scale = _mm512_set1_ps(s[g]);
      // The same operations for every row whatever R is, so that a row's result
      // does not depend on how many rows are multiplied with it.
      for (int r = 0; r < R; ++r) {
        const float* xr = x + r * k + g * kBlock;
        __m512 t = _mm512_mul_ps(lo, _mm512_loadu_ps(xr));
        t = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xr + 16), t);
        acc[r] = _mm512_fmadd_ps(scale, t, acc[r]);
        if (Bits == 4) off[r] += offsets[i * groups + g] * sums[r * groups + g];
      }
    }
    for (int r = 0; r < R; ++r) y[r * n + i] = _mm512_reduce_add_ps(acc[r]) + off[r];
  }
}

#else  // portable C++: the compiler vectorizes the inner loops for the CPU it targets

template <int R, int Bits>
void rows_kernel(const float* x, int64_t k, const uint8_t* values, const float* scales, const float* offsets,
                 const float* sums, int64_t n, int64_t begin, int64_t end, float* y) {
  const int64_t groups = k / kBlock;
  const int64_t row_bytes = Bits == 8 ? k : k / 2;
  for (int64_t i = begin; i < end; ++i) {
    const uint8_t* q = values + i * row_bytes;
    float acc[R] = {};
    for (int64_t g = 0; g < groups; ++g) {
      float w[kBlock];
      if (Bits == 8) {
        const int8_t* p = reinterpret_cast<const int8_t*>(q + g * kBlock);
        for (int j = 0; j < kBlock; ++j) w[j] = static_cast<float>(p[j]);
      } else {
        const uint8_t* p = q + g * kBlock / 2;
        for (int j = 0; j < kBlock / 2; ++j) {
          w[j] = static_cast<float>(p[j] & 15);
          w[j + kBlock / 2] = static_cast<float>(p[j] >> 4);
        }
      }
      for (int r = 0; r < R; ++r) {
        const float* xr = x + r * k + g * kBlock;
        float t = 0.f;
#pragma omp simd reduction(+ : t)
        for (int j = 0; j < kBlock; ++j) t += w[j] * xr[j];
        acc[r] += scales[i * groups + g] * t;
        if (Bits == 4) acc[r] += offsets[i * groups + g] * sums[r * groups + g];
      }
    }
    for (int r = 0; r < R; ++r) y[r * n + i] = acc[r];
  }
}

#endif

using Kernel = void (*)(const float*, int64_t, const uint8_t*, const float*, const float*, const float*, int64_t,
                        int64_t, int64_t, float*);

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
  const float* x;
  int64_t m, k, n;
  const uint8_t* values;
  const float* scales;
  const float* offsets;
  const float* sums;
  float* y;
  int bits;
  int64_t chunk, chunks;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void run_chunk(int64_t c) {
    const int64_t begin = c * chunk, end = std::min(n, begin + chunk);
    for (int64_t r0 = 0; r0 < m; r0 += kMaxRows) {
      const int64_t rows = std::min(kMaxRows, m - r0);
      Kernel kernel = bits == 8 ? kernel_for<8>(rows) : kernel_for<4>(rows);
      const float* sums_r = sums ? sums + r0 * (k / kBlock) : nullptr;
      kernel(x + r0 * k, k, values, scales, offsets, sums_r, n, begin, end, y + r0 * n);
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
  std::vector<float> sums;
  if (bits == 4) {
    sums.resize(m * (k / kBlock));
    block_sums(x.typed_data(), m, k, sums.data());
  }
  auto work = std::make_shared<Work>();
  work->x = x.typed_data();
  work->m = m, work->k = k, work->n = n;
  work->values = static_cast<const uint8_t*>(values.untyped_data());
  work->scales = scales.typed_data();
  work->offsets = bits == 4 ? offsets.typed_data() : nullptr;
  work->sums = bits == 4 ? sums.data() : nullptr;
  work->y = y->typed_data();
  work->bits = static_cast<int>(bits);
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
#ifdef MODELPORT_AVX512
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

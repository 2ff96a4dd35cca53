// AVX2 + F16C conversions. Hardware rounding is IEEE round-to-nearest-even, which is the scalar
// reference for every finite and infinite value; vectors holding a NaN go through the scalar code
// so NaN payload rules stay identical.
#include <cpuid.h>
#include <immintrin.h>

#include "kernels/reference.h"
#include "kernels/simd.h"

namespace pyconv::simd {
namespace {

inline bool any_nan_f32(__m256 v) { return _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0; }

// f16 NaN: exponent all ones and a non-zero mantissa, i.e. (h & 0x7fff) > 0x7c00.
inline bool any_nan_f16(__m128i h) {
  const __m128i a = _mm_and_si128(h, _mm_set1_epi16(0x7fff));
  return _mm_movemask_epi8(_mm_cmpgt_epi16(a, _mm_set1_epi16(0x7c00))) != 0;
}

// bf16 rounding of eight f32 lanes as in f32_to_bf16_bits (NaN lanes handled by the caller).
inline __m128i round_bf16(__m256i x) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
  // pack 8 x u32 (< 2^16) to 8 x u16
  const __m128i lo = _mm256_castsi256_si128(r);
  const __m128i hi = _mm256_extracti128_si256(r, 1);
  return _mm_packus_epi32(lo, hi);
}

inline __m256i widen_bf16(__m128i b) { return _mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16); }

}  // namespace

bool cpu_has_avx2() {
  // F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know "f16c"
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

void f32_to_f16_avx2(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    if (any_nan_f32(v)) {
      cast_ref::f32_to_f16(src + i, dst + i, 8);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  cast_ref::f32_to_f16(src + i, dst + i, n - i);
}

void f16_to_f32_avx2(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    if (any_nan_f16(h)) {
      cast_ref::f16_to_f32(src + i, dst + i, 8);
      continue;
    }
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  cast_ref::f16_to_f32(src + i, dst + i, n - i);
}

void f32_to_bf16_avx2(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    if (any_nan_f32(v)) {
      cast_ref::f32_to_bf16(src + i, dst + i, 8);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), round_bf16(_mm256_castps_si256(v)));
  }
  cast_ref::f32_to_bf16(src + i, dst + i, n - i);
}

void bf16_to_f32_avx2(const uint16_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(widen_bf16(b)));
  }
  cast_ref::bf16_to_f32(src + i, dst + i, n - i);
}

void bf16_to_f16_avx2(const uint16_t* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_castsi256_ps(widen_bf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    if (any_nan_f32(v)) {
      cast_ref::bf16_to_f16(src + i, dst + i, 8);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  cast_ref::bf16_to_f16(src + i, dst + i, n - i);
}

void f16_to_bf16_avx2(const uint16_t* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    if (any_nan_f16(h)) {
      cast_ref::f16_to_bf16(src + i, dst + i, 8);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), round_bf16(_mm256_castps_si256(_mm256_cvtph_ps(h))));
  }
  cast_ref::f16_to_bf16(src + i, dst + i, n - i);
}

}  // namespace pyconv::simd

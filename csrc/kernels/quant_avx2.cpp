// AVX2 quantizers. Each lane does the scalar reference's f32 operations (the same divisions,
// products and comparisons), so the bytes are identical; a block holding Inf or NaN goes to the
// scalar code, which owns those rules.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels/reference.h"
#include "kernels/simd.h"

namespace pyconv::simd {
namespace {

constexpr uint32_t kInfBits = 0x7f800000u;

// Lane-wise largest |x| of n floats (n a multiple of 8), as bits. Non-negative floats order like
// their bit patterns, and every Inf or NaN pattern is >= kInfBits.
inline __m256i max_abs_bits_lanes(const float* x, size_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i < n; i += 8)
    acc = _mm256_max_epi32(acc, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), abs_mask));
  return acc;
}

inline uint32_t max_abs_bits(const float* x, size_t n) {
  const __m256i acc = max_abs_bits_lanes(x, n);
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

// Largest |x| bits of each of the eight 32-float blocks at x, one lane per block.
inline __m256i max_abs_bits_of_blocks(const float* x) {
  __m256i m[8];
  for (int b = 0; b < 8; ++b) m[b] = max_abs_bits_lanes(x + 32 * b, 32);
  // Transposing reduction: pairs of blocks interleave and shrink to 4, then 2 lanes per 128-bit half;
  // the halves of blocks 0-3 and 4-7 then meet across the 128-bit boundary.
  __m256i t[4];
  for (int i = 0; i < 4; ++i)
    t[i] = _mm256_max_epi32(_mm256_unpacklo_epi32(m[2 * i], m[2 * i + 1]), _mm256_unpackhi_epi32(m[2 * i], m[2 * i + 1]));
  const __m256i u0 = _mm256_max_epi32(_mm256_unpacklo_epi64(t[0], t[1]), _mm256_unpackhi_epi64(t[0], t[1]));
  const __m256i u1 = _mm256_max_epi32(_mm256_unpacklo_epi64(t[2], t[3]), _mm256_unpackhi_epi64(t[2], t[3]));
  return _mm256_max_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

// The scale of a block of n floats; false when it holds Inf or NaN: the scalar code takes those.
inline bool finite_scale(const float* x, size_t n, float divisor, quant_ref::BlockScale* scale) {
  const uint32_t amax = max_abs_bits(x, n);
  if (amax >= kInfBits) return false;
  float f;
  std::memcpy(&f, &amax, 4);
  *scale = quant_ref::block_scale(f, divisor);
  return true;
}

// std::max and std::min of floats, as this file's own functions: a library template instantiated
// here would be a weak symbol (see kernels/reference.h).
inline float larger(float a, float b) { return a < b ? b : a; }
inline float smaller(float a, float b) { return b < a ? b : a; }

// Stores 32 values 0..255 held as i32 lanes of a (elements 0-7), b (8-15), c (16-23), d (24-31).
inline void store_bytes(__m256i a, __m256i b, __m256i c, __m256i d, uint8_t* out) {
  // The packs work within 128-bit halves, leaving 4-byte runs in the order a0 b0 c0 d0 a1 b1 c1 d1.
  const __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
  const __m256i ordered = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
}

// roundf on eight lanes: truncate, then step away from zero when the (exact) remainder is >= 0.5.
inline __m256i round_half_away(__m256 v) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(v, t);
  const __m256 up = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one);
  const __m256 down = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(-0.5f), _CMP_LE_OQ), one);
  return _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(t, up), down));
}

// ternary_code of the scalar path: 1 + (v >= 0.5) - (v <= -0.5); comparison masks are -1.
inline __m256i ternary_codes(__m256 v) {
  const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_set1_ps(0.5f), _CMP_GE_OQ));
  const __m256i le = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_set1_ps(-0.5f), _CMP_LE_OQ));
  return _mm256_add_epi32(_mm256_sub_epi32(_mm256_set1_epi32(1), ge), le);
}

// i2s_code: 1 where |x| < 1e-6 in double, which for floats is |x| <= 1e-6f; else 2 if x > 0, else 0.
inline __m256i i2s_codes(__m256 x) {
  const __m256 a = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  const __m256i zero = _mm256_castps_si256(_mm256_cmp_ps(a, _mm256_set1_ps(1e-6f), _CMP_LE_OQ));
  const __m256i pos = _mm256_castps_si256(_mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ));
  return _mm256_blendv_epi8(_mm256_and_si256(pos, _mm256_set1_epi32(2)), _mm256_set1_epi32(1), zero);
}

// One 128-element chunk into 32 bytes: byte m holds the codes of elements m, m+32, m+64, m+96 at
// bit shifts shift[0..3].
template <typename CodeFn>
inline void pack_chunk(const float* x, const int (&shift)[4], CodeFn code, uint8_t* out) {
  __m256i lanes[4];
  for (int j = 0; j < 4; ++j) {
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < 4; ++k)
      acc = _mm256_or_si256(acc, _mm256_slli_epi32(code(_mm256_loadu_ps(x + 32 * k + 8 * j)), shift[k]));
    lanes[j] = acc;
  }
  store_bytes(lanes[0], lanes[1], lanes[2], lanes[3], out);
}

}  // namespace

void quantize_q8_0_avx2(const float* x, uint8_t* y, size_t n) {
  // Eight blocks at a time, so that their scales (absmax / 127, 1 / d, f16) are computed in one vector.
  const size_t groups = n / 256;
  const __m256i byte_mask = _mm256_set1_epi32(0xff);  // int8 as its byte, so the unsigned packs keep it
  for (size_t g = 0; g < groups; ++g, x += 256, y += 8 * 34) {
    const __m256i amax = max_abs_bits_of_blocks(x);
    if (_mm256_movemask_epi8(_mm256_cmpgt_epi32(amax, _mm256_set1_epi32(kInfBits - 1))) != 0) {
      quant_ref::q8_0(x, y, 256);
      continue;
    }
    // block_scale on eight lanes: IEEE division rounds as the scalar one; F16C rounds finite d as f32_to_f16
    const __m256 d = _mm256_div_ps(_mm256_castsi256_ps(amax), _mm256_set1_ps(127.0f));
    __m256 id = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
    id = _mm256_and_ps(id, _mm256_cmp_ps(_mm256_sub_ps(id, id), _mm256_setzero_ps(), _CMP_EQ_OQ));  // Inf -> 0
    alignas(32) float ids[8];
    alignas(16) uint16_t ds[8];
    _mm256_store_ps(ids, id);
    _mm_store_si128(reinterpret_cast<__m128i*>(ds), _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (int b = 0; b < 8; ++b) {
      const float* xb = x + 32 * b;
      uint8_t* yb = y + 34 * b;
      std::memcpy(yb, &ds[b], 2);
      const __m256 idb = _mm256_set1_ps(ids[b]);
      __m256i q[4];
      for (int i = 0; i < 4; ++i)
        q[i] = _mm256_and_si256(round_half_away(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * i), idb)), byte_mask);
      store_bytes(q[0], q[1], q[2], q[3], yb + 2);
    }
  }
  quant_ref::q8_0(x, y, n % 256);  // fewer than eight blocks left
}

void quantize_tq2_0_avx2(const float* x, uint8_t* y, size_t n) {
  static constexpr int kShift[4] = {0, 2, 4, 6};
  for (size_t b = 0; b < n / 256; ++b, x += 256, y += 66) {
    quant_ref::BlockScale s;
    if (!finite_scale(x, 256, 1.0f, &s)) {
      quant_ref::tq2_0(x, y, 256);
      continue;
    }
    const __m256 id = _mm256_set1_ps(s.id);
    const auto code = [id](__m256 v) { return ternary_codes(_mm256_mul_ps(v, id)); };
    pack_chunk(x, kShift, code, y);
    pack_chunk(x + 128, kShift, code, y + 32);
    std::memcpy(y + 64, &s.d_f16, 2);
  }
}

void quantize_i2_s_avx2(const float* x, uint8_t* y, size_t n) {
  static constexpr int kShift[4] = {6, 4, 2, 0};
  for (size_t b = 0; b < n / 128; ++b, x += 128, y += 32) pack_chunk(x, kShift, i2s_codes, y);
}

// One lane per group, each doing quant_ref::levels_with_min's f32 operations in its order: the
// sums run over i within a lane exactly as the scalar loop runs, and the branches become blends.
void levels_with_min_x8(int n, int nmax, const float* x, const float* w, uint8_t* levels, float* scales, float* the_mins,
                        float rmin, float rdelta, int nstep, bool use_mad) {
  __m256 X[32], W[32];
  __m256i L[32], T[32];
  const __m256i gather_at = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
  X[0] = _mm256_i32gather_ps(x, gather_at, 4);  // n >= 1; set apart so that the compiler sees it
  W[0] = _mm256_i32gather_ps(w, gather_at, 4);
  for (int i = 1; i < n; ++i) {
    X[i] = _mm256_i32gather_ps(x + i, gather_at, 4);
    W[i] = _mm256_i32gather_ps(w + i, gather_at, 4);
  }
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256i top = _mm256_set1_epi32(nmax);
  const __m256i izero = _mm256_setzero_si256();
  // nearest_int: the float plus 1.5 * 2^23, its low mantissa bits less 2^22; then clamped to 0..nmax
  const __m256 magic = _mm256_set1_ps(12582912.f);
  const __m256i low_bits = _mm256_set1_epi32(0x007fffff), half = _mm256_set1_epi32(0x00400000);
  const auto level = [&](__m256 v) {
    const __m256i i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)), low_bits), half);
    return _mm256_min_epi32(_mm256_max_epi32(i, izero), top);
  };
  const auto error_of = [&](__m256 diff) { return use_mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff); };

  __m256 min = X[0], max = X[0], sum_w = W[0];
  __m256 sum_x = _mm256_mul_ps(sum_w, X[0]);
  for (int i = 1; i < n; ++i) {
    min = _mm256_min_ps(X[i], min);  // X[i] < min ? X[i] : min
    max = _mm256_max_ps(X[i], max);  // X[i] > max ? X[i] : max
    sum_w = _mm256_add_ps(sum_w, W[i]);
    sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(W[i], X[i]));
  }
  min = _mm256_blendv_ps(min, zero, _mm256_cmp_ps(min, zero, _CMP_GT_OQ));
  const __m256 first_min = min;
  const __m256 constant = _mm256_cmp_ps(max, min, _CMP_LE_OQ);
  const __m256 iscale0 = _mm256_div_ps(_mm256_set1_ps(static_cast<float>(nmax)), _mm256_sub_ps(max, min));
  __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale0);
  __m256 best = zero;
  for (int i = 0; i < n; ++i) {
    L[i] = level(_mm256_mul_ps(iscale0, _mm256_sub_ps(X[i], min)));
    const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(L[i])), min), X[i]);
    best = _mm256_add_ps(best, _mm256_mul_ps(W[i], error_of(diff)));
  }
  for (int is = 0; is <= nstep; ++is) {
    // the numerator is the same in every lane: computed once, as the scalar code computes it
    const float numerator = rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax);
    // max - min with the minimum of the best trial so far, as in the scalar loop
    const __m256 iscale = _mm256_div_ps(_mm256_set1_ps(numerator), _mm256_sub_ps(max, min));
    __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      T[i] = level(_mm256_mul_ps(iscale, _mm256_sub_ps(X[i], min)));
      const __m256 wl = _mm256_mul_ps(W[i], _mm256_cvtepi32_ps(T[i]));
      sum_l = _mm256_add_ps(sum_l, wl);
      sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, _mm256_cvtepi32_ps(T[i])));
      sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, X[i]));
    }
    const __m256 det = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
    const __m256 solvable = _mm256_cmp_ps(det, zero, _CMP_GT_OQ);
    if (_mm256_movemask_ps(solvable) == 0) continue;
    __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), det);
    __m256 this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), det);
    const __m256 positive_min = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
    this_min = _mm256_blendv_ps(this_min, zero, positive_min);
    this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), positive_min);
    __m256 cur = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(T[i])), this_min), X[i]);
      cur = _mm256_add_ps(cur, _mm256_mul_ps(W[i], error_of(diff)));
    }
    const __m256 better = _mm256_and_ps(solvable, _mm256_cmp_ps(cur, best, _CMP_LT_OQ));
    if (_mm256_movemask_ps(better) == 0) continue;
    const __m256i take = _mm256_castps_si256(better);
    for (int i = 0; i < n; ++i) L[i] = _mm256_blendv_epi8(L[i], T[i], take);
    best = _mm256_blendv_ps(best, cur, better);
    scale = _mm256_blendv_ps(scale, this_scale, better);
    min = _mm256_blendv_ps(min, this_min, better);
  }
  // a constant group: levels 0, scale 0 and its own minimum, as the scalar code returns early
  scale = _mm256_blendv_ps(scale, zero, constant);
  min = _mm256_blendv_ps(min, first_min, constant);
  _mm256_storeu_ps(scales, scale);
  _mm256_storeu_ps(the_mins, _mm256_xor_ps(min, sign));
  const __m256i keep = _mm256_castps_si256(_mm256_xor_ps(constant, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
  alignas(32) int32_t lanes[8];
  for (int i = 0; i < n; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_and_si256(L[i], keep));
    for (int g = 0; g < 8; ++g) levels[n * g + i] = static_cast<uint8_t>(lanes[g]);
  }
}

// The signed search (signed_levels in kernels/quant_search.cpp) with one lane per group, in the
// scalar code's operation order; w null means weights x^2.
void signed_levels_x8(int n, int nmax, const float* x, const float* w, int8_t* levels, float* scales) {
  __m256 X[32], W[32];
  __m256i L[32];
  const __m256i gather_at = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  __m256 amax = zero, max = zero;
  for (int i = 0; i < n; ++i) {
    X[i] = _mm256_i32gather_ps(x + i, gather_at, 4);
    W[i] = w ? _mm256_i32gather_ps(w + i, gather_at, 4) : _mm256_mul_ps(X[i], X[i]);
    const __m256 ax = _mm256_andnot_ps(sign, X[i]);
    const __m256 larger_abs = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
    amax = _mm256_blendv_ps(amax, ax, larger_abs);
    max = _mm256_blendv_ps(max, X[i], larger_abs);
  }
  const __m256 all_zero = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
  const __m256 magic = _mm256_set1_ps(12582912.f);
  const __m256i low_bits = _mm256_set1_epi32(0x007fffff), half = _mm256_set1_epi32(0x00400000);
  const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1);
  const auto level = [&](__m256 v) {
    const __m256i i = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(_mm256_add_ps(v, magic)), low_bits), half);
    return _mm256_min_epi32(_mm256_max_epi32(i, lo), hi);
  };
  __m256 iscale = _mm256_div_ps(_mm256_set1_ps(static_cast<float>(-nmax)), max);
  __m256 sumlx = zero, suml2 = zero;
  for (int i = 0; i < n; ++i) {
    L[i] = level(_mm256_mul_ps(iscale, X[i]));
    const __m256 fl = _mm256_cvtepi32_ps(L[i]);
    sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(W[i], X[i]), fl));
    suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(W[i], fl), fl));
  }
  __m256 scale = _mm256_blendv_ps(_mm256_div_ps(sumlx, suml2), zero, _mm256_cmp_ps(suml2, zero, _CMP_EQ_OQ));
  __m256 best = _mm256_mul_ps(scale, sumlx);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = _mm256_div_ps(_mm256_set1_ps(-(static_cast<float>(nmax) + 0.1f * static_cast<float>(is))), max);
    __m256i T[32];
    sumlx = suml2 = zero;
    for (int i = 0; i < n; ++i) {
      T[i] = level(_mm256_mul_ps(iscale, X[i]));
      const __m256 fl = _mm256_cvtepi32_ps(T[i]);
      sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(W[i], X[i]), fl));
      suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(W[i], fl), fl));
    }
    const __m256 better = _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                                        _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
    if (_mm256_movemask_ps(better) == 0) continue;
    const __m256i take = _mm256_castps_si256(better);
    for (int i = 0; i < n; ++i) L[i] = _mm256_blendv_epi8(L[i], T[i], take);
    const __m256 this_scale = _mm256_div_ps(sumlx, suml2);
    scale = _mm256_blendv_ps(scale, this_scale, better);
    best = _mm256_blendv_ps(best, _mm256_mul_ps(this_scale, sumlx), better);
  }
  // an all-zero group: levels 0 (not nmax) and scale 0, as the scalar code returns early
  _mm256_storeu_ps(scales, _mm256_blendv_ps(scale, zero, all_zero));
  const __m256i keep = _mm256_castps_si256(_mm256_xor_ps(all_zero, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
  const __m256i offset = _mm256_set1_epi32(nmax);
  alignas(32) int32_t lanes[8];
  for (int i = 0; i < n; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_and_si256(_mm256_add_epi32(L[i], offset), keep));
    for (int g = 0; g < 8; ++g) levels[n * g + i] = static_cast<int8_t>(lanes[g]);
  }
}

// The IQ4 levels as floats, in increasing order (kIq4Levels of kernels/quant_search.cpp).
alignas(32) static const float kIq4LevelsF[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// One lane per group of 32, in iq4_group_scale's operation order. The nearest level: the index ml
// of the largest level <= v counts the levels 1..14 at or below v, which is where the scalar
// bisection stops; then the nearer of ml and ml + 1 (the lower on a tie), 0 at or below the first
// level, 15 at or above the last, and for NaN (where the bisection never moves down).
void iq4_scales_x8(const float* x, const float* w, float* scales) {
  __m256 X[32], W[32];
  const __m256i gather_at = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(32));
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  __m256 amax = zero, max = zero;
  for (int i = 0; i < 32; ++i) {
    X[i] = _mm256_i32gather_ps(x + i, gather_at, 4);
    W[i] = _mm256_i32gather_ps(w + i, gather_at, 4);
    const __m256 ax = _mm256_andnot_ps(sign, X[i]);
    const __m256 larger_abs = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
    amax = _mm256_blendv_ps(amax, ax, larger_abs);
    max = _mm256_blendv_ps(max, X[i], larger_abs);
  }
  const __m256 all_zero = _mm256_cmp_ps(amax, _mm256_set1_ps(1e-15f), _CMP_LT_OQ);
  const __m256 first = _mm256_set1_ps(kIq4LevelsF[0]), last = _mm256_set1_ps(kIq4LevelsF[15]);
  const auto level_value = [&](__m256 v) {
    __m256i ml = _mm256_setzero_si256();
    for (int k = 1; k < 15; ++k)
      ml = _mm256_sub_epi32(ml, _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_set1_ps(kIq4LevelsF[k]), _CMP_GE_OQ)));
    const __m256 below = _mm256_i32gather_ps(kIq4LevelsF, ml, 4);
    const __m256 above = _mm256_i32gather_ps(kIq4LevelsF + 1, ml, 4);
    __m256 q = _mm256_blendv_ps(above, below, _mm256_cmp_ps(_mm256_sub_ps(v, below), _mm256_sub_ps(above, v), _CMP_LT_OQ));
    q = _mm256_blendv_ps(q, last, _mm256_or_ps(_mm256_cmp_ps(v, last, _CMP_GE_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    return _mm256_blendv_ps(q, first, _mm256_cmp_ps(v, first, _CMP_LE_OQ));
  };
  __m256 d = _mm256_div_ps(_mm256_xor_ps(max, sign), first);
  __m256 id = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
  __m256 sumqx = zero, sumq2 = zero;
  for (int i = 0; i < 32; ++i) {
    const __m256 q = level_value(_mm256_mul_ps(id, X[i]));
    const __m256 wq = _mm256_mul_ps(W[i], q);
    sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, X[i]));
    sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
  }
  d = _mm256_and_ps(_mm256_div_ps(sumqx, sumq2), _mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ));
  __m256 best = _mm256_mul_ps(d, sumqx);
  for (int t = -7; t <= 7; ++t) {
    id = _mm256_div_ps(_mm256_set1_ps(static_cast<float>(t + static_cast<int>(kIq4LevelsF[0]))), max);
    sumqx = sumq2 = zero;
    for (int i = 0; i < 32; ++i) {
      const __m256 q = level_value(_mm256_mul_ps(id, X[i]));
      const __m256 wq = _mm256_mul_ps(W[i], q);
      sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, X[i]));
      sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
    }
    const __m256 better = _mm256_and_ps(_mm256_cmp_ps(sumq2, zero, _CMP_GT_OQ),
                                        _mm256_cmp_ps(_mm256_mul_ps(sumqx, sumqx), _mm256_mul_ps(best, sumq2), _CMP_GT_OQ));
    const __m256 this_d = _mm256_div_ps(sumqx, sumq2);
    d = _mm256_blendv_ps(d, this_d, better);
    best = _mm256_blendv_ps(best, _mm256_mul_ps(this_d, sumqx), better);
  }
  _mm256_storeu_ps(scales, _mm256_blendv_ps(d, zero, all_zero));
}

void abs_stats_avx2(const float* x, size_t n, double lanes[8], float* max_abs, float* min_nonzero_abs) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 smallest = _mm256_set1_ps(quant_ref::i2s_smallest_nonzero());
  const __m256 inf = _mm256_set1_ps(INFINITY);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  __m256 mx = _mm256_setzero_ps(), mn = inf;
  const size_t n8 = n / 8 * 8;
  for (size_t i = 0; i < n8; i += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
    mx = _mm256_max_ps(a, mx);  // a NaN lane keeps the running maximum
    // ordered compare: NaN and what I2_S reads as zero stay out
    mn = _mm256_min_ps(_mm256_blendv_ps(inf, a, _mm256_cmp_ps(a, smallest, _CMP_GE_OQ)), mn);
  }
  _mm256_storeu_pd(lanes, lo);
  _mm256_storeu_pd(lanes + 4, hi);
  float m[8], z[8];
  _mm256_storeu_ps(m, mx);
  _mm256_storeu_ps(z, mn);
  float top = 0.0f, least = INFINITY;
  for (int j = 0; j < 8; ++j) {
    top = larger(top, m[j]);
    least = smaller(least, z[j]);
  }
  // n8 is a multiple of 8, so the tail's lanes start at lane 0
  quant_ref::accumulate_abs(x + n8, n - n8, lanes, &top, &least);
  *max_abs = top;
  *min_nonzero_abs = least;
}

void ternarize_avx2(float* x, size_t n, float s, float magnitude) {
  const __m256 sv = _mm256_set1_ps(s), mag = _mm256_set1_ps(magnitude);
  const __m256 one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f);
  const size_t n8 = n / 8 * 8;
  for (size_t i = 0; i < n8; i += 8) {
    const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // max(r, -1) turns NaN into -1 and min(., 1) keeps it, as the scalar std::max/std::min do
    const __m256 q = _mm256_min_ps(_mm256_max_ps(r, minus_one), one);
    _mm256_storeu_ps(x + i, _mm256_mul_ps(q, mag));
  }
  quant_ref::ternarize(x + n8, n - n8, s, magnitude);
}

}  // namespace pyconv::simd

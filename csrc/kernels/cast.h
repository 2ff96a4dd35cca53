// Conversions between f64, f32, f16 and bf16, round-to-nearest-even, and from the 8-bit floats
// f8_e4m3 (e4m3fn: no infinities, S.1111.111 is NaN) and f8_e5m2 (the top byte of an f16), which
// every wider float holds exactly, and f8_e8m0 (a power of two).
//   f32 -> f16 follows numpy: NaN keeps its sign and top payload bits (never becomes Inf).
//   f32 -> bf16 follows torch for every non-NaN value; NaN keeps its sign and top payload bits and
//   is made quiet (ggml's rule; torch writes 0xffff for every NaN).
//   Widening conversions are exact and keep NaN payloads.
// The scalar functions are the reference; the SIMD paths produce the same bits.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace pyconv {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_f16_bits(uint32_t x) {
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) {  // NaN
    const uint32_t payload = (a >> 13) & 0x3ffu;
    return static_cast<uint16_t>(sign | 0x7c00u | (payload ? payload : 1u));
  }
  if (a >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536: Inf
  if (a < 0x38800000u) {                                               // f16 subnormal range
    if (a < 0x33000000u) return sign;                                  // below 2^-25: zero
    const uint32_t exp = a >> 23;
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;  // units of 2^-24
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  const uint32_t v = a - 0x38000000u;  // rebias 127 -> 15
  uint32_t q = v >> 13;
  const uint32_t rem = v & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | q);
}

inline uint32_t f16_to_f32_bits(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return sign | 0x7f800000u | (mant << 13);
  if (exp == 0) {
    if (mant == 0) return sign;
    exp = 1;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    mant &= 0x3ffu;
  }
  return sign | ((exp + 112u) << 23) | (mant << 13);
}

inline uint16_t f32_to_bf16_bits(uint32_t x) {
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline uint32_t bf16_to_f32_bits(uint16_t b) { return static_cast<uint32_t>(b) << 16; }

uint16_t f64_to_f16_bits(double d);  // single rounding, as numpy

inline uint32_t f8_e4m3_to_f32_bits(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> 3) & 0xfu;
  const uint32_t mant = b & 0x7u;
  if (exp == 0xfu && mant == 0x7u) return sign | 0x7fc00000u;
  if (exp != 0) return sign | ((exp + 120u) << 23) | (mant << 20);  // rebias 7 -> 127
  if (mant == 0) return sign;
  // subnormal: mant * 2^-9, normalized
  uint32_t e = 127u - 6u, m = mant;
  while (!(m & 0x8u)) {
    m <<= 1;
    --e;
  }
  return sign | (e << 23) | ((m & 0x7u) << 20);
}

inline uint32_t f8_e5m2_to_f32_bits(uint8_t b) { return f16_to_f32_bits(static_cast<uint16_t>(b << 8)); }

// e8m0 (the MX formats' scales): 2^(b - 127); 0 is 2^-127, a subnormal; 0xff is NaN.
inline uint32_t f8_e8m0_to_f32_bits(uint8_t b) {
  if (b == 0xffu) return 0x7fc00000u;
  return b == 0 ? 0x00400000u : static_cast<uint32_t>(b) << 23;
}

inline float f16_to_f32(uint16_t h) { return f32_from_bits(f16_to_f32_bits(h)); }
inline uint16_t f32_to_f16(float f) { return f32_to_f16_bits(f32_bits(f)); }
inline float bf16_to_f32(uint16_t b) { return f32_from_bits(bf16_to_f32_bits(b)); }
inline uint16_t f32_to_bf16(float f) { return f32_to_bf16_bits(f32_bits(f)); }

// Converts n elements between float types (f64/f32/f16/bf16, and from f8); identical types are
// copied. Throws Error for any other pair.
void cast(DType from, const void* src, DType to, void* dst, size_t n);
// 8-bit integer codes (i8, u8: a scaled source's) as f32, exactly; Error for other types.
void integers_to_f32(DType from, const void* src, float* dst, size_t n);
// Whether cast() writes float type t from other types (the f8 types it only reads).
bool cast_writes(DType t);

// SIMD dispatch: "avx2" when the CPU has AVX2+F16C+FMA and PYCONV_SIMD is not "scalar".
const char* simd_level();
void set_simd_enabled(bool enabled);  // tests compare both paths
bool simd_enabled();

}  // namespace pyconv

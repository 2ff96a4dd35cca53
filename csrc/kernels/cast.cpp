#include "kernels/cast.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "kernels/reference.h"
#include "kernels/simd.h"

namespace pyconv {
namespace {

std::atomic<int> g_simd{-1};  // -1: not decided yet

bool use_avx2() {
  int v = g_simd.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("PYCONV_SIMD");
    const bool forced_scalar = env && std::string(env) == "scalar";
    v = (!forced_scalar && simd::cpu_has_avx2()) ? 1 : 0;
    g_simd.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

// Elements are loaded and stored through memcpy: a source may sit at any offset of a map, and a
// memcpy of one element compiles to one load or store.
template <typename From, typename To, typename Fn>
void each(const void* src, void* dst, size_t n, Fn fn) {
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (size_t i = 0; i < n; ++i) {
    From x;
    std::memcpy(&x, s + i * sizeof(From), sizeof(From));
    const To y = fn(x);
    std::memcpy(d + i * sizeof(To), &y, sizeof(To));
  }
}

}  // namespace

namespace cast_ref {

void f32_to_f16(const float* src, uint16_t* dst, size_t n) {
  each<float, uint16_t>(src, dst, n, [](float f) { return pyconv::f32_to_f16(f); });
}
void f16_to_f32(const uint16_t* src, float* dst, size_t n) {
  each<uint16_t, float>(src, dst, n, [](uint16_t h) { return pyconv::f16_to_f32(h); });
}
void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  each<float, uint16_t>(src, dst, n, [](float f) { return pyconv::f32_to_bf16(f); });
}
void bf16_to_f32(const uint16_t* src, float* dst, size_t n) {
  each<uint16_t, float>(src, dst, n, [](uint16_t b) { return pyconv::bf16_to_f32(b); });
}
void bf16_to_f16(const uint16_t* src, uint16_t* dst, size_t n) {
  each<uint16_t, uint16_t>(src, dst, n, [](uint16_t b) { return f32_to_f16_bits(bf16_to_f32_bits(b)); });
}
void f16_to_bf16(const uint16_t* src, uint16_t* dst, size_t n) {
  each<uint16_t, uint16_t>(src, dst, n, [](uint16_t h) { return f32_to_bf16_bits(f16_to_f32_bits(h)); });
}
void f8_e4m3_to_f32(const uint8_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_from_bits(f8_e4m3_to_f32_bits(src[i]));
}
void f8_e5m2_to_f32(const uint8_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_from_bits(f8_e5m2_to_f32_bits(src[i]));
}
void f8_e8m0_to_f32(const uint8_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = f32_from_bits(f8_e8m0_to_f32_bits(src[i]));
}

}  // namespace cast_ref

uint16_t f64_to_f16_bits(double d) {
  uint64_t x;
  std::memcpy(&x, &d, 8);
  const uint16_t sign = static_cast<uint16_t>((x >> 48) & 0x8000u);
  const uint64_t a = x & 0x7fffffffffffffffull;
  if (a > 0x7ff0000000000000ull) {
    const uint64_t payload = (a >> 42) & 0x3ffu;
    return static_cast<uint16_t>(sign | 0x7c00u | (payload ? payload : 1u));
  }
  if (a >= 0x40f0000000000000ull) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536
  const int exp = static_cast<int>(a >> 52);                                      // biased 1023
  uint64_t mant = (a & 0xfffffffffffffull) | (exp ? 0x10000000000000ull : 0);
  // value = mant * 2^(exp - 1075); the f16 grid step is 2^-24 below 2^-14, else 2^(e-10).
  const int e_unbiased = exp - 1023;
  const int grid = e_unbiased < -14 ? -24 : e_unbiased - 10;
  const int shift = grid - (exp - 1075);  // bits to drop from mant
  if (shift >= 64) return sign;
  uint64_t q = mant >> shift;
  const uint64_t rem = mant & ((1ull << shift) - 1ull);
  const uint64_t half = 1ull << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  // q counts grid steps; rebuild the f16 bits. Subnormal grid: bits = q. Normal: the leading bit
  // of q sits at position 10, and exponent + mantissa add up with carries handled naturally.
  if (grid == -24) return static_cast<uint16_t>(sign | q);
  const uint64_t bits = (static_cast<uint64_t>(e_unbiased + 15) << 10) + (q - 0x400u);
  return static_cast<uint16_t>(sign | (bits >= 0x7c00u ? 0x7c00u : bits));
}

const char* simd_level() { return use_avx2() ? "avx2" : "scalar"; }

void set_simd_enabled(bool enabled) {
  g_simd.store(enabled && simd::cpu_has_avx2() ? 1 : 0, std::memory_order_relaxed);
}

bool simd_enabled() { return use_avx2(); }

void integers_to_f32(DType from, const void* src, float* dst, size_t n) {
  if (from == DType::I8) return each<int8_t, float>(src, dst, n, [](int8_t v) { return static_cast<float>(v); });
  if (from == DType::U8) return each<uint8_t, float>(src, dst, n, [](uint8_t v) { return static_cast<float>(v); });
  throw Error(std::string("cannot decode ") + traits(from).name + " codes");
}

bool cast_writes(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64; }

void cast(DType from, const void* src, DType to, void* dst, size_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * traits(from).block_bytes / traits(from).block_elems);
    return;
  }
  using F = DType;
  if (from == F::F8_E4M3 || from == F::F8_E5M2 || from == F::F8_E8M0) {
    // every f8 value is exact in f32; other targets are reached through it, a stack buffer at a time
    const auto decode = from == F::F8_E4M3   ? cast_ref::f8_e4m3_to_f32
                        : from == F::F8_E5M2 ? cast_ref::f8_e5m2_to_f32
                                             : cast_ref::f8_e8m0_to_f32;
    const auto* in8 = static_cast<const uint8_t*>(src);
    if (to == F::F32) return decode(in8, static_cast<float*>(dst), n);
    if (!cast_writes(to)) throw Error(std::string("cannot cast ") + traits(from).name + " to " + traits(to).name);
    float buf[1024];
    const size_t out_elem = traits(to).block_bytes;
    for (size_t i = 0; i < n; i += 1024) {
      const size_t m = std::min<size_t>(1024, n - i);
      decode(in8 + i, buf, m);
      cast(F::F32, buf, to, static_cast<uint8_t*>(dst) + i * out_elem, m);
    }
    return;
  }
  const bool avx2 = use_avx2();
  const auto* in16 = static_cast<const uint16_t*>(src);
  auto* out16 = static_cast<uint16_t*>(dst);
  if (from == F::F32 && to == F::F16)
    return (avx2 ? simd::f32_to_f16_avx2 : cast_ref::f32_to_f16)(static_cast<const float*>(src), out16, n);
  if (from == F::F16 && to == F::F32)
    return (avx2 ? simd::f16_to_f32_avx2 : cast_ref::f16_to_f32)(in16, static_cast<float*>(dst), n);
  if (from == F::F32 && to == F::BF16)
    return (avx2 ? simd::f32_to_bf16_avx2 : cast_ref::f32_to_bf16)(static_cast<const float*>(src), out16, n);
  if (from == F::BF16 && to == F::F32)
    return (avx2 ? simd::bf16_to_f32_avx2 : cast_ref::bf16_to_f32)(in16, static_cast<float*>(dst), n);
  if (from == F::BF16 && to == F::F16) return (avx2 ? simd::bf16_to_f16_avx2 : cast_ref::bf16_to_f16)(in16, out16, n);
  if (from == F::F16 && to == F::BF16) return (avx2 ? simd::f16_to_bf16_avx2 : cast_ref::f16_to_bf16)(in16, out16, n);
  if (from == F::F64 && to == F::F32)
    return each<double, float>(src, dst, n, [](double d) { return static_cast<float>(d); });
  if (from == F::F64 && to == F::F16) return each<double, uint16_t>(src, dst, n, f64_to_f16_bits);
  if (from == F::F64 && to == F::BF16)  // via f32, as torch does
    return each<double, uint16_t>(src, dst, n, [](double d) { return f32_to_bf16(static_cast<float>(d)); });
  if (from == F::F32 && to == F::F64)
    return each<float, double>(src, dst, n, [](float f) { return static_cast<double>(f); });
  if (from == F::F16 && to == F::F64)
    return each<uint16_t, double>(src, dst, n, [](uint16_t h) { return static_cast<double>(f16_to_f32(h)); });
  if (from == F::BF16 && to == F::F64)
    return each<uint16_t, double>(src, dst, n, [](uint16_t b) { return static_cast<double>(bf16_to_f32(b)); });
  throw Error(std::string("cannot cast ") + traits(from).name + " to " + traits(to).name);
}

}  // namespace pyconv

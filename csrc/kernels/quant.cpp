#include "kernels/quant.h"

#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "kernels/cast.h"

namespace pyconv {
namespace {

constexpr size_t kQ8Block = 32;

void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// d = absmax / 127 and id = 1 / d in f32; q = round half away from zero (roundf), as gguf-py.
void quantize_q8_0(const float* x, uint8_t* y, size_t n) {
  for (size_t b = 0; b < n / kQ8Block; ++b, x += kQ8Block, y += 34) {
    float amax = 0.0f;
    for (size_t j = 0; j < kQ8Block; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y, d);
    for (size_t j = 0; j < kQ8Block; ++j) y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
  }
}

void dequantize_q8_0(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQ8Block; ++b, x += 34, y += kQ8Block) {
    const float d = load_f16(x);
    for (size_t j = 0; j < kQ8Block; ++j) y[j] = static_cast<float>(static_cast<int8_t>(x[2 + j])) * d;
  }
}

// Q4/Q5 blocks of 32: low nibbles hold elements 0-15, high nibbles 16-31; Q5 adds a fifth bit per
// element from a 32-bit mask. Offset types subtract 8 / 16; the "_1" types add a minimum m.
template <bool kHasMin, bool kFiveBit>
void dequantize_q4_q5(const uint8_t* x, float* y, size_t n) {
  constexpr size_t kHeader = 2 + (kHasMin ? 2 : 0) + (kFiveBit ? 4 : 0);
  constexpr size_t kBytes = kHeader + 16;
  for (size_t b = 0; b < n / 32; ++b, x += kBytes, y += 32) {
    const float d = load_f16(x);
    const float m = kHasMin ? load_f16(x + 2) : 0.0f;
    uint32_t qh = 0;
    if (kFiveBit) std::memcpy(&qh, x + 2 + (kHasMin ? 2 : 0), 4);
    const uint8_t* qs = x + kHeader;
    for (size_t j = 0; j < 16; ++j) {
      int lo = qs[j] & 0x0f;
      int hi = qs[j] >> 4;
      if (kFiveBit) {
        lo |= static_cast<int>(((qh >> j) << 4) & 0x10);
        hi |= static_cast<int>((qh >> (j + 12)) & 0x10);
      }
      const int offset = kHasMin ? 0 : (kFiveBit ? 16 : 8);
      if (kHasMin) {
        y[j] = static_cast<float>(lo) * d + m;
        y[j + 16] = static_cast<float>(hi) * d + m;
      } else {
        y[j] = static_cast<float>(lo - offset) * d;
        y[j + 16] = static_cast<float>(hi - offset) * d;
      }
    }
  }
}

[[noreturn]] void unsupported(const char* what, DType t) {
  throw Error(std::string("cannot ") + what + " " + traits(t).name);
}

}  // namespace

bool can_quantize(DType t) { return t == DType::Q8_0; }

bool can_dequantize(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
      return true;
    default:
      return false;
  }
}

void quantize(DType t, const float* src, void* dst, size_t n, const QuantParams&) {
  if (n % traits(t).block_elems != 0) throw Error(std::string(traits(t).name) + ": element count is not a whole number of blocks");
  uint8_t* out = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::Q8_0:
      return quantize_q8_0(src, out, n);
    default:
      unsupported("quantize to", t);
  }
}

void dequantize(DType t, const void* src, float* dst, size_t n, const QuantParams&) {
  if (n % traits(t).block_elems != 0) throw Error(std::string(traits(t).name) + ": element count is not a whole number of blocks");
  const uint8_t* in = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::Q8_0:
      return dequantize_q8_0(in, dst, n);
    case DType::Q4_0:
      return dequantize_q4_q5<false, false>(in, dst, n);
    case DType::Q4_1:
      return dequantize_q4_q5<true, false>(in, dst, n);
    case DType::Q5_0:
      return dequantize_q4_q5<false, true>(in, dst, n);
    case DType::Q5_1:
      return dequantize_q4_q5<true, true>(in, dst, n);
    default:
      unsupported("dequantize", t);
  }
}

void i2s_tail(float scale, uint8_t out[32]) {
  std::memset(out, 0, 32);
  std::memcpy(out, &scale, 4);
}

}  // namespace pyconv

#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "kernels/cast.h"
#include "kernels/reference.h"
#include "kernels/simd.h"

namespace pyconv {
namespace {

constexpr size_t kQ8Block = 32;
constexpr size_t kQK = 256;        // elements of a K-quant or TQ block
constexpr size_t kI2SBlock = 128;  // elements packed into 32 I2_S bytes
constexpr size_t kTQ1Bytes = 54, kTQ2Bytes = 66;
constexpr uint16_t kNanScaleF16 = 0x7e00;  // gguf-py stores f16(NaN) for a block holding a NaN

// BitNet's zero test for I2_S codes, made in double as its C quantizer does.
bool i2s_is_zero(float x) { return std::fabs(static_cast<double>(x)) < 1e-6; }

void store_f16_bits(uint8_t* p, uint16_t h) { std::memcpy(p, &h, 2); }
float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// The f16 scale and 1/d of one gguf block; a NaN anywhere makes d NaN and every code zero.
quant_ref::BlockScale scan_block(const float* x, size_t n, float divisor) {
  float amax = 0.0f;
  for (size_t j = 0; j < n; ++j) {
    const float a = std::fabs(x[j]);
    if (std::isnan(a)) return {kNanScaleF16, 0.0f};
    amax = std::max(amax, a);
  }
  return quant_ref::block_scale(amax, divisor);
}

// |x * id| <= 1 + 2 ulp, so rounding half away from zero (gguf's np_roundf) is two comparisons.
// NaN (an infinite x times id == 0) gives code 1, as numpy's cast of NaN to an integer does.
uint8_t ternary_code(float v) { return static_cast<uint8_t>(1 + (v >= 0.5f) - (v <= -0.5f)); }

uint8_t i2s_code(float v) {
  if (i2s_is_zero(v)) return 1;
  return v > 0.0f ? 2 : 0;
}

// Five (or four, then times 3) base-3 digits, most significant first, stored as ceil(v * 256 / 243)
// so that digit k can be read back as ((byte * 3^k) mod 256 * 3) >> 8.
uint8_t pack_trits(const uint8_t* q, size_t stride, int digits) {
  unsigned v = 0;
  for (int k = 0; k < digits; ++k) v = v * 3 + q[k * stride];
  if (digits == 4) v *= 3;
  return static_cast<uint8_t>((v * 256 + 242) / 243);
}

void encode_tq1_0(const float* x, uint8_t* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, y += kTQ1Bytes) {
    const quant_ref::BlockScale s = scan_block(x, kQK, 1.0f);
    uint8_t q[kQK];
    for (size_t j = 0; j < kQK; ++j) q[j] = ternary_code(x[j] * s.id);
    // qs[0..31]: elements m + 32k; qs[32..47]: 160 + m + 16k; qh[0..3]: 240 + j + 4k.
    for (size_t m = 0; m < 32; ++m) y[m] = pack_trits(q + m, 32, 5);
    for (size_t m = 0; m < 16; ++m) y[32 + m] = pack_trits(q + 160 + m, 16, 5);
    for (size_t j = 0; j < 4; ++j) y[48 + j] = pack_trits(q + 240 + j, 4, 4);
    store_f16_bits(y + 52, s.d_f16);
  }
}

void decode_q8_0(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQ8Block; ++b, x += 34, y += kQ8Block) {
    const float d = load_f16(x);
    for (size_t j = 0; j < kQ8Block; ++j) y[j] = static_cast<float>(static_cast<int8_t>(x[2 + j])) * d;
  }
}

// Q4/Q5 blocks of 32: low nibbles hold elements 0-15, high nibbles 16-31; Q5 adds a fifth bit per
// element from a 32-bit mask. Offset types subtract 8 / 16; the "_1" types add a minimum m.
template <bool kHasMin, bool kFiveBit>
void decode_q4_q5(const uint8_t* x, float* y, size_t n) {
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

// Q2_K (84 bytes): scales[16] (low nibble scale, high nibble min per 16 elements), qs[64], d, dmin.
// Element 128c + 32k + m is bits 2k of qs[32c + m].
void decode_q2_k(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += 84, y += kQK) {
    const uint8_t* sc = x;
    const uint8_t* qs = x + 16;
    const float d = load_f16(x + 80), dmin = load_f16(x + 82);
    for (size_t e = 0; e < kQK; ++e) {
      const size_t c = e / 128, k = e / 32 % 4, m = e % 32;
      const float dl = d * static_cast<float>(sc[e / 16] & 0x0f);
      const float ml = dmin * static_cast<float>(sc[e / 16] >> 4);
      y[e] = dl * static_cast<float>((qs[32 * c + m] >> (2 * k)) & 3) - ml;
    }
  }
}

// Q3_K (110 bytes): hmask[32], qs[64], scales[12] (16 six-bit scales, offset 32), d. The low two
// bits come as in Q2_K; a clear hmask bit (element 32j + m: bit j of hmask[m]) subtracts 4.
void decode_q3_k(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += 110, y += kQK) {
    const uint8_t* hmask = x;
    const uint8_t* qs = x + 32;
    const uint8_t* sc = x + 96;
    const float d = load_f16(x + 108);
    float dl[16];
    for (size_t i = 0; i < 16; ++i) {
      const int low = (sc[i % 8] >> (4 * (i / 8))) & 0x0f;
      const int high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
      dl[i] = d * static_cast<float>((low | high << 4) - 32);
    }
    for (size_t e = 0; e < kQK; ++e) {
      const size_t c = e / 128, k = e / 32 % 4, m = e % 32;
      const int low = (qs[32 * c + m] >> (2 * k)) & 3;
      const int high_clear = ((hmask[m] >> (e / 32)) & 1) ^ 1;
      y[e] = dl[e / 16] * static_cast<float>(low - 4 * high_clear);
    }
  }
}

// Eight 6-bit scales and mins packed into the 12 bytes of Q4_K and Q5_K.
void k_scale_min(const uint8_t* s, int sc[8], int mn[8]) {
  for (size_t j = 0; j < 4; ++j) {
    sc[j] = s[j] & 0x3f;
    mn[j] = s[4 + j] & 0x3f;
    sc[4 + j] = (s[8 + j] & 0x0f) | ((s[j] >> 2) & 0x30);
    mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
  }
}

// Q4_K (144 bytes) and Q5_K (176 bytes): d, dmin, scales[12], [qh[32]], qs[128]. Element
// 64c + 32h + m is nibble h of qs[32c + m]; Q5_K's fifth bit for element 32j + m is bit j of qh[m].
template <bool kFiveBit>
void decode_q4_q5_k(const uint8_t* x, float* y, size_t n) {
  constexpr size_t kBytes = kFiveBit ? 176 : 144;
  for (size_t b = 0; b < n / kQK; ++b, x += kBytes, y += kQK) {
    const float d = load_f16(x), dmin = load_f16(x + 2);
    int sc[8], mn[8];
    k_scale_min(x + 4, sc, mn);
    const uint8_t* qh = x + 16;
    const uint8_t* qs = x + 16 + (kFiveBit ? 32 : 0);
    for (size_t e = 0; e < kQK; ++e) {
      const size_t j = e / 32, m = e % 32;
      int q = (qs[32 * (j / 2) + m] >> (4 * (j % 2))) & 0x0f;
      if (kFiveBit) q |= ((qh[m] >> j) & 1) << 4;
      const float dj = d * static_cast<float>(sc[j]);
      const float mj = dmin * static_cast<float>(mn[j]);
      y[e] = dj * static_cast<float>(q) - mj;
    }
  }
}

// Q6_K (210 bytes): ql[128], qh[64], scales[16] (int8 per 16 elements), d. Element 128c + 64h + m
// (m < 64) is nibble h of ql[64c + m]; its high bits, for 128c + 32k + m (m < 32), are bits 2k of
// qh[32c + m]; the value is offset by 32.
void decode_q6_k(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += 210, y += kQK) {
    const uint8_t* ql = x;
    const uint8_t* qh = x + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(x + 192);
    const float d = load_f16(x + 208);
    for (size_t e = 0; e < kQK; ++e) {
      const size_t c = e / 128, r = e % 128;
      const int low = (ql[64 * c + r % 64] >> (4 * (r / 64))) & 0x0f;
      const int high = (qh[32 * c + r % 32] >> (2 * (r / 32))) & 0x03;
      y[e] = d * static_cast<float>(sc[e / 16]) * static_cast<float>((low | high << 4) - 32);
    }
  }
}

// Trit k (most significant first) of a TQ1_0 byte.
int trit(uint8_t byte, int k) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const uint8_t shifted = static_cast<uint8_t>(byte * kPow3[k]);
  return (shifted * 3) >> 8;
}

void decode_tq1_0(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += kTQ1Bytes, y += kQK) {
    const float d = load_f16(x + 52);
    auto put = [&](size_t e, uint8_t byte, int k) { y[e] = d * static_cast<float>(trit(byte, k) - 1); };
    for (int k = 0; k < 5; ++k) {
      for (size_t m = 0; m < 32; ++m) put(32 * k + m, x[m], k);
      for (size_t m = 0; m < 16; ++m) put(160 + 16 * k + m, x[32 + m], k);
    }
    for (int k = 0; k < 4; ++k)
      for (size_t j = 0; j < 4; ++j) put(240 + 4 * k + j, x[48 + j], k);
  }
}

// TQ2_0 (66 bytes): qs[64], d. Element 128c + 32k + m is bits 2k of qs[32c + m], value code - 1
// (a code of 3, never written, reads as 2, as gguf-py does).
void decode_tq2_0(const uint8_t* x, float* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += kTQ2Bytes, y += kQK) {
    const float d = load_f16(x + 64);
    for (size_t e = 0; e < kQK; ++e) {
      const int code = (x[32 * (e / 128) + e % 32] >> (2 * (e / 32 % 4))) & 3;
      y[e] = d * static_cast<float>(code - 1);
    }
  }
}

// I2_S: element 128b + 32g + p is bits 6 - 2g of byte 32b + p; code 3 reads as 0 (BitNet's reader).
void decode_i2_s(const uint8_t* x, float* y, size_t n, float scale) {
  static constexpr float kValue[4] = {-1.0f, 0.0f, 1.0f, 0.0f};
  for (size_t b = 0; b < n / kI2SBlock; ++b, x += 32, y += kI2SBlock)
    for (size_t e = 0; e < kI2SBlock; ++e) y[e] = scale * kValue[(x[e % 32] >> (6 - 2 * (e / 32))) & 3];
}

// 2-bit codes equal to 3 in the first code_bytes bytes of each of `blocks` blocks of block_bytes bytes.
uint64_t count_code3(const uint8_t* x, size_t blocks, size_t block_bytes, size_t code_bytes) {
  uint64_t bad = 0;
  for (size_t b = 0; b < blocks; ++b, x += block_bytes)
    for (size_t i = 0; i < code_bytes; ++i)
      for (int shift = 0; shift < 8; shift += 2) bad += ((x[i] >> shift) & 3) == 3;
  return bad;
}

// Rows of a type hold a multiple of row_elems elements (I2_S: 128, else a block).
void check_row(const DTypeTraits& tr, size_t n_per_row) {
  if (n_per_row % tr.row_elems != 0)
    throw Error(std::string(tr.name) + ": " + std::to_string(n_per_row) + " elements are not a whole number of " +
                std::to_string(tr.row_elems) + "-element blocks");
}

}  // namespace

namespace quant_ref {

BlockScale block_scale(float absmax, float divisor) {
  const float d = absmax / divisor;
  const float id = 1.0f / d;
  return {f32_to_f16(d), std::isfinite(id) ? id : 0.0f};
}

// d = absmax / 127 and id = 1 / d in f32; q = round half away from zero (roundf), as gguf-py.
void q8_0(const float* x, uint8_t* y, size_t n) {
  for (size_t b = 0; b < n / kQ8Block; ++b, x += kQ8Block, y += 34) {
    const BlockScale s = scan_block(x, kQ8Block, 127.0f);
    store_f16_bits(y, s.d_f16);
    for (size_t j = 0; j < kQ8Block; ++j) {
      const float v = x[j] * s.id;  // |v| <= 127 + 3 ulp, or NaN as in ternary_code
      y[2 + j] = static_cast<uint8_t>(std::isnan(v) ? 0 : static_cast<int8_t>(std::roundf(v)));
    }
  }
}

// d = block absmax; code = round(x / d) + 1, four codes per byte, LSB first, 32 bytes apart.
void tq2_0(const float* x, uint8_t* y, size_t n) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, y += kTQ2Bytes) {
    const BlockScale s = scan_block(x, kQK, 1.0f);
    for (size_t c = 0; c < 2; ++c)
      for (size_t m = 0; m < 32; ++m) {
        uint8_t byte = 0;
        for (size_t k = 0; k < 4; ++k) byte |= static_cast<uint8_t>(ternary_code(x[128 * c + 32 * k + m] * s.id) << (2 * k));
        y[32 * c + m] = byte;
      }
    store_f16_bits(y + 64, s.d_f16);
  }
}

// Signs only (the scale is per tensor): byte 32b + p = codes of elements p, p+32, p+64, p+96, MSB first.
void i2_s(const float* x, uint8_t* y, size_t n) {
  for (size_t b = 0; b < n / kI2SBlock; ++b, x += kI2SBlock, y += 32)
    for (size_t p = 0; p < 32; ++p) {
      uint8_t byte = 0;
      for (size_t g = 0; g < 4; ++g) byte = static_cast<uint8_t>(byte << 2 | i2s_code(x[32 * g + p]));
      y[p] = byte;
    }
}

float i2s_smallest_nonzero() {
  static const float smallest = [] {
    float f = static_cast<float>(1e-6);
    while (i2s_is_zero(f)) f = std::nextafter(f, INFINITY);
    while (!i2s_is_zero(std::nextafter(f, 0.0f))) f = std::nextafter(f, 0.0f);
    return f;
  }();
  return smallest;
}

void accumulate_abs(const float* x, size_t n, double lanes[8], float* max_abs, float* min_nonzero_abs) {
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    lanes[i % 8] += a;
    *max_abs = std::max(*max_abs, a);
    if (!i2s_is_zero(a)) *min_nonzero_abs = std::min(*min_nonzero_abs, a);
  }
}

void ternarize(float* x, size_t n, float s, float magnitude) {
  for (size_t i = 0; i < n; ++i) {
    const float q = std::min(1.0f, std::max(-1.0f, std::nearbyint(x[i] * s)));
    x[i] = q * magnitude;
  }
}

}  // namespace quant_ref

AbsStats abs_stats(const float* x, size_t n) {
  double lanes[8] = {};
  AbsStats st;
  if (simd_enabled()) simd::abs_stats_avx2(x, n, lanes, &st.max_abs, &st.min_nonzero_abs);
  else quant_ref::accumulate_abs(x, n, lanes, &st.max_abs, &st.min_nonzero_abs);
  // the lanes joined as ((0+1)+(2+3))+((4+5)+(6+7)), whichever path filled them
  st.sum_abs = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  return st;
}

void ternarize(float* x, size_t n, float s, float magnitude) {
  if (simd_enabled()) simd::ternarize_avx2(x, n, s, magnitude);
  else quant_ref::ternarize(x, n, s, magnitude);
}

void quantize(DType t, const float* src, void* dst, size_t n_rows, size_t n_per_row, const QuantParams& params) {
  const DTypeTraits& tr = traits(t);
  if (!tr.quantize) throw Error(std::string("cannot quantize to ") + tr.name);
  check_row(tr, n_per_row);
  tr.quantize(src, static_cast<uint8_t*>(dst), n_rows, n_per_row, params);
}

void dequantize(DType t, const void* src, float* dst, size_t n, const QuantParams& params) {
  const DTypeTraits& tr = traits(t);
  if (!tr.dequantize) throw Error(std::string("cannot dequantize ") + tr.name);
  check_row(tr, n);
  tr.dequantize(static_cast<const uint8_t*>(src), dst, n, params);
}

void quantize_tensor(DType t, const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const float* importance) {
  const DTypeTraits& tr = traits(t);
  QuantParams params;
  if (tr.needs_stats()) params = tr.tensor_params(abs_stats(src, n_rows * n_per_row).max_abs);
  params.importance = importance;
  quantize(t, src, dst, n_rows, n_per_row, params);
  if (tr.tail_bytes) tr.write_tail(params, dst + row_nbytes(t, n_rows * n_per_row));
}

QuantParams tensor_params_from_tail(DType t, const uint8_t* data, size_t n) {
  const DTypeTraits& tr = traits(t);
  return tr.tail_bytes ? tr.read_tail(data + row_nbytes(t, n)) : QuantParams{};
}

uint64_t invalid_codes(DType t, const uint8_t* src, size_t n) {
  const DTypeTraits& tr = traits(t);
  if (!tr.invalid_codes) return 0;
  check_row(tr, n);
  return tr.invalid_codes(src, n);
}

void dequantize_tensor(DType t, const uint8_t* src, float* dst, size_t n) {
  dequantize(t, src, dst, n, tensor_params_from_tail(t, src, n));
}

void unpack_bits(const uint8_t* src, float* dst, size_t n, uint32_t bits, uint32_t shift, float offset, float scale) {
  const uint32_t mask = (1u << bits) - 1u;
  for (size_t i = 0; i < n; ++i) dst[i] = (static_cast<float>((src[i] >> shift) & mask) + offset) * scale;
}

namespace block_kernels {

void quantize_q8_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams&) {
  if (simd_enabled()) simd::quantize_q8_0_avx2(src, dst, n_rows * n_per_row);
  else quant_ref::q8_0(src, dst, n_rows * n_per_row);
}
void quantize_tq1_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams&) {
  encode_tq1_0(src, dst, n_rows * n_per_row);
}
void quantize_tq2_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams&) {
  if (simd_enabled()) simd::quantize_tq2_0_avx2(src, dst, n_rows * n_per_row);
  else quant_ref::tq2_0(src, dst, n_rows * n_per_row);
}
void quantize_i2_s(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams&) {
  if (simd_enabled()) simd::quantize_i2_s_avx2(src, dst, n_rows * n_per_row);
  else quant_ref::i2_s(src, dst, n_rows * n_per_row);
}

void dequantize_q8_0(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q8_0(src, dst, n); }
void dequantize_q4_0(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q4_q5<false, false>(src, dst, n); }
void dequantize_q4_1(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q4_q5<true, false>(src, dst, n); }
void dequantize_q5_0(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q4_q5<false, true>(src, dst, n); }
void dequantize_q5_1(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q4_q5<true, true>(src, dst, n); }
void dequantize_q2_k(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q2_k(src, dst, n); }
void dequantize_q3_k(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q3_k(src, dst, n); }
void dequantize_q4_k(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q4_q5_k<false>(src, dst, n); }
void dequantize_q5_k(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q4_q5_k<true>(src, dst, n); }
void dequantize_q6_k(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_q6_k(src, dst, n); }
void dequantize_tq1_0(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_tq1_0(src, dst, n); }
void dequantize_tq2_0(const uint8_t* src, float* dst, size_t n, const QuantParams&) { decode_tq2_0(src, dst, n); }
void dequantize_mxfp4(const uint8_t* src, float* dst, size_t n, const QuantParams&) {
  // e2m1 values doubled, times half the block's e8m0 scale: ggml's kvalues_mxfp4 and
  // GGML_E8M0_TO_FP32_HALF (exponents 0 and 1 give subnormal halves)
  static constexpr int8_t kValues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  for (size_t b = 0; b < n / 32; ++b, src += 17, dst += 32) {
    const uint32_t e = src[0];
    const float d = f32_from_bits(e < 2 ? 0x00200000u << e : (e - 1) << 23);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>(kValues[src[1 + j] & 0xf]) * d;
      dst[j + 16] = static_cast<float>(kValues[src[1 + j] >> 4]) * d;
    }
  }
}
void pack_mxfp4(const uint8_t* codes, const uint8_t* scale, uint8_t* dst) {
  const auto code = [codes](int i) { return static_cast<uint8_t>((codes[i / 2] >> (4 * (i & 1))) & 0xf); };
  dst[0] = scale[0];
  for (int j = 0; j < 16; ++j) dst[1 + j] = static_cast<uint8_t>(code(j) | code(j + 16) << 4);
}
void dequantize_f4_e2m1(const uint8_t* src, float* dst, size_t n, const QuantParams&) {
  static constexpr float kValues[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                        -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  for (size_t i = 0; i < n / 2; ++i) {
    dst[2 * i] = kValues[src[i] & 0xf];
    dst[2 * i + 1] = kValues[src[i] >> 4];
  }
}
void dequantize_i2_s(const uint8_t* src, float* dst, size_t n, const QuantParams& params) {
  decode_i2_s(src, dst, n, params.tensor_scale);
}

uint64_t invalid_codes_tq2_0(const uint8_t* src, size_t n) { return count_code3(src, n / kQK, kTQ2Bytes, 64); }
uint64_t invalid_codes_i2_s(const uint8_t* src, size_t n) { return count_code3(src, n / kI2SBlock, 32, 32); }

QuantParams i2_s_params(float max_abs) {
  QuantParams p;
  p.tensor_scale = max_abs;
  return p;
}

void write_i2_s_tail(const QuantParams& params, uint8_t* tail) {
  std::memset(tail, 0, 32);
  std::memcpy(tail, &params.tensor_scale, 4);
}

QuantParams read_i2_s_tail(const uint8_t* tail) {
  QuantParams p;
  std::memcpy(&p.tensor_scale, tail, 4);
  return p;
}

}  // namespace block_kernels
}  // namespace pyconv

// The quantizers that search for their scales: the legacy 32-element types (Q4_0, Q4_1, Q5_0,
// Q5_1), the K-quants (Q2_K ... Q6_K) and the non-linear IQ4 types, bit-exact with llama.cpp's
// ggml_quantize_chunk. ggml picks a different search when it is given importance weights (an
// imatrix row, QuantParams::importance), so each type has both. Bit-exactness fixes every f32
// operation and its order: products associate left to right as in C (w*x*l is (w*x)*l), integer
// factors become floats where C converts them, and narrowing stores wrap as a C cast does. Names
// follow the roles the values play, not ggml's spelling.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/cast.h"
#include "kernels/quant.h"
#include "kernels/reference.h"
#include "kernels/simd.h"

namespace pyconv {
namespace {

constexpr int kSuper = 256;             // elements of a K-quant or IQ4_XS super-block
constexpr float kGroupMaxEps = 1e-15f;  // a group whose largest |x| is below this is all zero

// The 16 levels of IQ4_NL and IQ4_XS, in increasing order.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// Round to nearest, ties to even, by adding 1.5 * 2^23: valid for |v| < 2^22, and for larger or
// non-finite v the same garbage as ggml's, from the same bits.
int nearest_int(float v) {
  const float biased = v + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &biased, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

int clamp_int(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Signed levels l in [-nmax, nmax) stored as l + nmax, for the scale that minimises the weighted
// error sum w (x - d l)^2 over 19 trial scales around -nmax / max (w = x^2 when weights are null).
// All-zero groups give d = 0 and levels 0.
float signed_levels(int n, int nmax, const float* x, int8_t* levels, const float* weights) {
  float max = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) levels[i] = 0;
    return 0.0f;
  }
  auto weight = [&](int i) { return weights ? weights[i] : x[i] * x[i]; };
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.0f, suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    levels[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float l = static_cast<float>(clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      const float w = weight(i);
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        levels[i] = static_cast<int8_t>(nmax + clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// signed_levels over groups of n: group g is x + n g with weights w + n g (w null: x^2), eight at a
// time on the AVX2 path.
void signed_groups(int groups, int n, int nmax, const float* x, const float* w, int8_t* L, float* scales) {
  int g = 0;
  if (simd_enabled())
    for (; g + 8 <= groups; g += 8) simd::signed_levels_x8(n, nmax, x + n * g, w ? w + n * g : nullptr, L + n * g, scales + g);
  for (; g < groups; ++g) scales[g] = signed_levels(n, nmax, x + n * g, L + n * g, w ? w + n * g : nullptr);
}

// Q3_K's levels without importance: start from -nmax / max, then move single levels while that
// lowers the x^2-weighted error (at most five sweeps). Levels are stored as l + nmax.
float q3_levels(int n, int nmax, const float* x, int8_t* levels) {
  float max = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) levels[i] = 0;
    return 0.0f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.0f, suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_int(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    levels[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      const float li = static_cast<float>(levels[i]);
      float slx = sumlx - w * x[i] * li;
      if (slx > 0) {
        float sl2 = suml2 - w * li * li;
        const int nl = clamp_int(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (nl != levels[i]) {
          const float fl = static_cast<float>(nl);
          slx += w * x[i] * fl;
          sl2 += w * fl * fl;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            levels[i] = static_cast<int8_t>(nl);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) levels[i] = static_cast<int8_t>(levels[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The searches in groups: eight groups at a time on the AVX2 path (one group per lane, each lane
// doing levels_with_min's operations), the rest one by one. Group g is x + n g, its weights
// w + n g, its levels L + n g.
void groups_with_min(int groups, int n, int nmax, const float* x, const float* w, uint8_t* L, float* scales, float* mins,
                     float rmin, float rdelta, int nstep, bool use_mad) {
  int g = 0;
  if (simd_enabled())
    for (; g + 8 <= groups; g += 8)
      simd::levels_with_min_x8(n, nmax, x + n * g, w + n * g, L + n * g, scales + g, mins + g, rmin, rdelta, nstep, use_mad);
  uint8_t trial[32];
  for (; g < groups; ++g)
    scales[g] = quant_ref::levels_with_min(n, nmax, x + n * g, w + n * g, L + n * g, &mins[g], trial, rmin, rdelta, nstep, use_mad);
}

// Unsigned levels 0..nmax for non-negative x (sub-block scales or mins) with importance weights:
// the best of nine trial scales, then single-level moves (ggml's make_qp_quants).
float positive_levels(int n, int nmax, const float* x, uint8_t* levels, const float* weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) levels[i] = 0;
    return 0.0f;
  }
  const float fnmax = static_cast<float>(nmax);
  float iscale = fnmax / max;
  for (int i = 0; i < n; ++i) levels[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(levels[i]);
    best_mse += weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + fnmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    levels[i] = static_cast<uint8_t>(l);
    // the sums take l itself, which the byte store would wrap if it were negative
    const float w = weights[i], fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = weights[i];
      const float li = static_cast<float>(levels[i]);
      float slx = sumlx - w * x[i] * li;
      float sl2 = suml2 - w * li * li;
      if (slx > 0 && sl2 > 0) {
        const int nl = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (nl != levels[i]) {
          const float fl = static_cast<float>(nl);
          slx += w * x[i] * fl;
          sl2 += w * fl * fl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            levels[i] = static_cast<uint8_t>(nl);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Importance weights as ggml builds them: qw * sqrt(sigma2 + x^2).
void importance_weights(const float* qw, const float* x, int n, float sigma2, float* w) {
  for (int j = 0; j < n; ++j) w[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

float sum_squares(const float* x, size_t n) {
  float s = 0;
  for (size_t j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

// ---- legacy 32-element types

// The element of largest |x| (the first one on ties), signed.
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

void min_max(const float* x, int n, float* lo, float* hi) {
  float mn = std::numeric_limits<float>::max(), mx = -std::numeric_limits<float>::max();
  for (int j = 0; j < n; ++j) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
  *lo = mn;
  *hi = mx;
}

// Codes of 32 elements into 16 nibble pairs (low: 0-15, high: 16-31) and, for five-bit codes, the
// 32-bit mask of their fifth bits.
void pack_nibbles(const uint8_t* q, uint8_t* qs, uint32_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
    h |= static_cast<uint32_t>((q[j] & 0x10u) >> 4) << j;
    h |= static_cast<uint32_t>((q[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  if (qh) *qh = h;
}

// Q4_0 / Q5_0 without importance: d = max / -half (half = 8 or 16), code = min(2 half - 1, int8(x/d + half + 0.5)).
template <int kHalf>
void symmetric_block(const float* x, uint8_t* q, float* d_out) {
  const float max = signed_absmax(x, 32);
  const float d = max / static_cast<float>(-kHalf);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  for (int j = 0; j < 32; ++j) {
    const int8_t v = static_cast<int8_t>(static_cast<int>(x[j] * id + (static_cast<float>(kHalf) + 0.5f)));
    q[j] = static_cast<uint8_t>(std::min(2 * kHalf - 1, static_cast<int>(v)));
  }
}

// Q4_1 / Q5_1 without importance: d = (max - min) / (levels - 1), m = min.
template <int kLevels>
void affine_block(const float* x, uint8_t* q, float* d_out, float* m_out) {
  float lo, hi;
  min_max(x, 32, &lo, &hi);
  const float d = (hi - lo) / static_cast<float>(kLevels - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  *m_out = lo;
  for (int j = 0; j < 32; ++j) {
    const float v = (x[j] - lo) * id + 0.5f;
    q[j] = kLevels == 16 ? static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(static_cast<int>(v)))))
                         : static_cast<uint8_t>(static_cast<int>(v));
  }
}

// A row of a legacy type, eight blocks at a time. With importance: per-row sigma2, weights per
// column, then signed_levels (Q4_0, Q5_0) or the search with a minimum (Q4_1, Q5_1).
template <bool kHasMin, bool kFiveBit>
void legacy_row(const float* x, uint8_t* y, size_t n_per_row, const float* qw) {
  constexpr size_t kBytes = 2 + (kHasMin ? 2 : 0) + (kFiveBit ? 4 : 0) + 16;
  constexpr int kMax = kFiveBit ? 31 : 15;
  const float sigma2 = qw ? sum_squares(x, n_per_row) / static_cast<float>(n_per_row) : 0.0f;
  const size_t blocks = n_per_row / 32;
  for (size_t b0 = 0; b0 < blocks; b0 += 8) {
    const int count = static_cast<int>(std::min<size_t>(8, blocks - b0));
    const float* xb = x + 32 * b0;
    uint8_t q[kSuper];
    float d[8], m[8] = {};
    if (!qw) {
      for (int k = 0; k < count; ++k) {
        if (kHasMin) affine_block<kMax + 1>(xb + 32 * k, q + 32 * k, &d[k], &m[k]);
        else symmetric_block<(kMax + 1) / 2>(xb + 32 * k, q + 32 * k, &d[k]);
      }
    } else {
      float w[kSuper];
      importance_weights(qw + 32 * b0, xb, 32 * count, sigma2, w);
      if (kHasMin) {
        float neg_min[8];
        groups_with_min(count, 32, kMax, xb, w, q, d, neg_min, -0.9f, 0.05f, 36, false);
        for (int k = 0; k < count; ++k) m[k] = -neg_min[k];
      } else {
        int8_t l[kSuper];
        signed_groups(count, 32, (kMax + 1) / 2, xb, w, l, d);
        for (int j = 0; j < 32 * count; ++j) q[j] = static_cast<uint8_t>(l[j]);
      }
    }
    for (int k = 0; k < count; ++k) {
      uint8_t* yb = y + (b0 + static_cast<size_t>(k)) * kBytes;
      put_f16(yb, d[k]);
      if (kHasMin) put_f16(yb + 2, m[k]);
      uint32_t qh = 0;
      pack_nibbles(q + 32 * k, yb + kBytes - 16, kFiveBit ? &qh : nullptr);
      if (kFiveBit) std::memcpy(yb + 2 + (kHasMin ? 2 : 0), &qh, 4);
    }
  }
}

// ---- K-quants

// Four 2-bit codes per byte: byte 32c + m holds elements 128c + m + 32k at bits 2k.
void pack_2bit(const uint8_t* l, uint8_t* qs) {
  for (int c = 0; c < kSuper; c += 128)
    for (int m = 0; m < 32; ++m)
      qs[c / 4 + m] = static_cast<uint8_t>(l[c + m] | (l[c + m + 32] << 2) | (l[c + m + 64] << 4) | (l[c + m + 96] << 6));
}

// Q2_K: 16 groups of 16 with a 4-bit scale and 4-bit min each.
void q2_k_block(const float* x, uint8_t* y, const float* qw) {
  uint8_t* scales = y;
  uint8_t* qs = y + 16;
  uint8_t L[kSuper];
  float mins[16], sc[16], w[kSuper];
  float d_block, m_block;
  if (!qw) {
    for (int l = 0; l < kSuper; ++l) w[l] = std::fabs(x[l]);
    groups_with_min(16, 16, 3, x, w, L, sc, mins, -0.5f, 0.1f, 15, true);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      if (sc[j] > max_scale) max_scale = sc[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = 15.f / max_scale;
      for (int j = 0; j < 16; ++j) scales[j] = static_cast<uint8_t>(nearest_int(iscale * sc[j]));
      d_block = max_scale / 15.f;
    } else {
      std::memset(scales, 0, 16);
      d_block = 0.f;
    }
    if (max_min > 0) {
      const float iscale = 15.f / max_min;
      for (int j = 0; j < 16; ++j) scales[j] = static_cast<uint8_t>(scales[j] | (nearest_int(iscale * mins[j]) << 4));
      m_block = max_min / 15.f;
    } else {
      m_block = 0.f;
    }
  } else {
    float sw[16];
    uint8_t ls[16], lm[16];
    const float sigma2 = sum_squares(x, kSuper) / static_cast<float>(kSuper);
    importance_weights(qw, x, kSuper, sigma2, w);
    for (int j = 0; j < 16; ++j) {
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) sw[j] += w[16 * j + l];
    }
    groups_with_min(16, 16, 3, x, w, L, sc, mins, -0.9f, 0.05f, 36, false);
    d_block = positive_levels(16, 15, sc, ls, sw);
    m_block = positive_levels(16, 15, mins, lm, sw);
    for (int j = 0; j < 16; ++j) scales[j] = static_cast<uint8_t>(ls[j] | (lm[j] << 4));
  }
  put_f16(y + 80, d_block);
  put_f16(y + 82, m_block);
  const float d_all = get_f16(y + 80), m_all = get_f16(y + 82);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * static_cast<float>(scales[j] & 0xf);
    if (d == 0.0f) continue;
    const float dm = m_all * static_cast<float>(scales[j] >> 4);
    for (int i = 0; i < 16; ++i) L[16 * j + i] = static_cast<uint8_t>(clamp_int(nearest_int((x[16 * j + i] + dm) / d), 0, 3));
  }
  pack_2bit(L, qs);
}

// Q3_K's sixteen 6-bit scales (stored +32): low nibbles in bytes 0-7, high pairs in bytes 8-11.
void pack_q3_scales(const int* l, uint8_t* s) {
  std::memset(s, 0, 12);
  for (int j = 0; j < 16; ++j) {
    int8_t v = static_cast<int8_t>(l[j]);
    if (j < 8) s[j] = static_cast<uint8_t>(v & 0xf);
    else s[j - 8] = static_cast<uint8_t>(s[j - 8] | ((v & 0xf) << 4));
    v = static_cast<int8_t>(v >> 4);
    s[j % 4 + 8] = static_cast<uint8_t>(s[j % 4 + 8] | (v << (2 * (j / 4))));
  }
}

int q3_scale(const uint8_t* s, int j) {
  const int low = j < 8 ? (s[j] & 0xf) : (s[j - 8] >> 4);
  return static_cast<int8_t>(static_cast<int8_t>(low | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
}

// Q3_K: hmask[32], qs[64], scales[12], d.
void q3_k_block(const float* x, uint8_t* y, const float* qw) {
  uint8_t* hmask = y;
  uint8_t* qs = y + 32;
  uint8_t* scales = y + 96;
  int8_t L[kSuper];
  float sc[16];
  int packed[16];
  float d_block;
  if (!qw) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      sc[j] = q3_levels(16, 4, x + 16 * j, L + 16 * j);
      if (std::fabs(sc[j]) > amax) {
        amax = std::fabs(sc[j]);
        max_scale = sc[j];
      }
    }
    if (max_scale != 0.0f) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int8_t l = static_cast<int8_t>(nearest_int(iscale * sc[j]));
        packed[j] = clamp_int(l, -32, 31) + 32;
      }
      pack_q3_scales(packed, scales);
      d_block = 1 / iscale;
    } else {
      std::memset(scales, 0, 12);
      d_block = 0.f;
    }
  } else {
    float w[kSuper], sw[16];
    int8_t ls[16];
    const float sigma2 = 2 * sum_squares(x, kSuper) / static_cast<float>(kSuper);
    importance_weights(qw, x, kSuper, sigma2, w);
    for (int j = 0; j < 16; ++j) {
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += w[16 * j + l];
      sw[j] = sumw;
    }
    signed_groups(16, 16, 4, x, w, L, sc);
    d_block = signed_levels(16, 32, sc, ls, sw);
    for (int j = 0; j < 16; ++j) packed[j] = ls[j];
    pack_q3_scales(packed, scales);
  }
  put_f16(y + 108, d_block);
  const float d_all = get_f16(y + 108);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * static_cast<float>(q3_scale(scales, j));
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i) L[16 * j + i] = static_cast<int8_t>(clamp_int(nearest_int(x[16 * j + i] / d), -4, 3) + 4);
  }
  // the third bit of element 32k + m is bit k of hmask[m]
  std::memset(hmask, 0, 32);
  uint8_t low[kSuper];
  for (int j = 0; j < kSuper; ++j) {
    int l = L[j];
    if (l > 3) {
      hmask[j % 32] = static_cast<uint8_t>(hmask[j % 32] | (1 << (j / 32)));
      l -= 4;
    }
    low[j] = static_cast<uint8_t>(l);
  }
  pack_2bit(low, qs);
}

// Q4_K and Q5_K's eight 6-bit scales and mins in 12 bytes.
void pack_k4_scales(const uint8_t* ls, const uint8_t* lm, uint8_t* s) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      s[j] = ls[j];
      s[j + 4] = lm[j];
    } else {
      s[j + 4] = static_cast<uint8_t>((ls[j] & 0xf) | ((lm[j] & 0xf) << 4));
      s[j - 4] = static_cast<uint8_t>(s[j - 4] | ((ls[j] >> 4) << 6));
      s[j] = static_cast<uint8_t>(s[j] | ((lm[j] >> 4) << 6));
    }
  }
}

void k4_scale_min(const uint8_t* q, int j, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q4_K (kMax 15) and Q5_K (kMax 31): d, dmin, scales[12], [qh[32]], qs[128]; eight groups of 32.
template <int kMax>
void q45_k_block(const float* x, uint8_t* y, const float* qw) {
  constexpr bool kFiveBit = kMax == 31;
  uint8_t L[kSuper], ls[8], lm[8];
  float sc[8], mins[8], w[kSuper];
  float d_block, m_block;
  if (!qw) {
    for (int j = 0; j < 8; ++j) {
      const float* xg = x + 32 * j;
      const float av_x = std::sqrt(sum_squares(xg, 32) / 32);
      for (int l = 0; l < 32; ++l) w[32 * j + l] = av_x + std::fabs(xg[l]);
    }
    if (kFiveBit) groups_with_min(8, 32, kMax, x, w, L, sc, mins, -0.5f, 0.1f, 15, false);
    else groups_with_min(8, 32, kMax, x, w, L, sc, mins, -1.f, 0.1f, 20, false);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      if (sc[j] > max_scale) max_scale = sc[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * sc[j])));
      lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    }
    d_block = max_scale / 63.f;
    m_block = max_min / 63.f;
  } else {
    float sw[8];
    const float sigma2 = 2 * sum_squares(x, kSuper) / static_cast<float>(kSuper);
    importance_weights(qw, x, kSuper, sigma2, w);
    for (int j = 0; j < 8; ++j) {
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += w[32 * j + l];
      sw[j] = sumw;
    }
    groups_with_min(8, 32, kMax, x, w, L, sc, mins, -0.9f, 0.05f, 36, false);
    d_block = positive_levels(8, 63, sc, ls, sw);
    m_block = positive_levels(8, 63, mins, lm, sw);
  }
  uint8_t* scales = y + 4;
  pack_k4_scales(ls, lm, scales);
  put_f16(y, d_block);
  put_f16(y + 2, m_block);
  const float d_all = get_f16(y), m_all = get_f16(y + 2);
  for (int j = 0; j < 8; ++j) {
    int s, m;
    k4_scale_min(scales, j, &s, &m);
    const float d = d_all * static_cast<float>(s);
    if (d == 0.0f) continue;
    const float dm = m_all * static_cast<float>(m);
    for (int i = 0; i < 32; ++i) L[32 * j + i] = static_cast<uint8_t>(clamp_int(nearest_int((x[32 * j + i] + dm) / d), 0, kMax));
  }
  // element 64c + 32h + m: nibble h of qs[32c + m]; Q5_K's fifth bit is bit 2c + h of qh[m]
  uint8_t* qh = y + 16;
  uint8_t* qs = y + 16 + (kFiveBit ? 32 : 0);
  if (kFiveBit) std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c)
    for (int m = 0; m < 32; ++m) {
      int lo = L[64 * c + m], hi = L[64 * c + m + 32];
      if (kFiveBit) {
        if (lo > 15) {
          lo -= 16;
          qh[m] = static_cast<uint8_t>(qh[m] | (1 << (2 * c)));
        }
        if (hi > 15) {
          hi -= 16;
          qh[m] = static_cast<uint8_t>(qh[m] | (2 << (2 * c)));
        }
      }
      qs[32 * c + m] = static_cast<uint8_t>(lo | (hi << 4));
    }
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d; sixteen groups of 16, levels -32..31.
void q6_k_block(const float* x, uint8_t* y, const float* qw) {
  int8_t L[kSuper];
  float sc[16];
  float max_scale = 0, max_abs_scale = 0;
  signed_groups(16, 16, 32, x, qw, L, sc);
  for (int g = 0; g < 16; ++g) {
    if (std::fabs(sc[g]) > max_abs_scale) {
      max_abs_scale = std::fabs(sc[g]);
      max_scale = sc[g];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(y, 0, 210);
    return;
  }
  int8_t* scales = reinterpret_cast<int8_t*>(y + 192);
  const float iscale = -128.f / max_scale;
  put_f16(y + 208, 1 / iscale);
  for (int g = 0; g < 16; ++g) scales[g] = static_cast<int8_t>(std::min(127, nearest_int(iscale * sc[g])));
  const float d_all = get_f16(y + 208);
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * static_cast<float>(scales[j]);
    if (d == 0.0f) continue;
    for (int i = 0; i < 16; ++i) L[16 * j + i] = static_cast<int8_t>(clamp_int(nearest_int(x[16 * j + i] / d), -32, 31) + 32);
  }
  uint8_t* ql = y;
  uint8_t* qh = y + 128;
  for (int c = 0; c < kSuper; c += 128, ql += 64, qh += 32)
    for (int m = 0; m < 32; ++m) {
      const int a = L[c + m], b = L[c + m + 32], e = L[c + m + 64], f = L[c + m + 96];
      ql[m] = static_cast<uint8_t>((a & 0xf) | ((e & 0xf) << 4));
      ql[m + 32] = static_cast<uint8_t>((b & 0xf) | ((f & 0xf) << 4));
      qh[m] = static_cast<uint8_t>((a >> 4) | ((b >> 4) << 2) | ((e >> 4) << 4) | ((f >> 4) << 6));
    }
}

// ---- IQ4: nibbles index kIq4Levels

// The index of the level nearest to v (the lower one on a tie), by bisection as ggml does.
int nearest_level(float v) {
  const int8_t* val = kIq4Levels;
  if (v <= static_cast<float>(val[0])) return 0;
  if (v >= static_cast<float>(val[15])) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < static_cast<float>(val[mid])) hi = mid;
    else lo = mid;
  }
  return v - static_cast<float>(val[hi - 1]) < static_cast<float>(val[hi]) - v ? hi - 1 : hi;
}

// The scale of one IQ4 group of 32 with weights w: the best of 15 trials around max / -127 by
// weighted least squares (0 for an all-zero group).
float iq4_group_scale(const float* x, const float* w) {
  constexpr int kTries = 7;
  const float v0 = static_cast<float>(kIq4Levels[0]);
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  if (amax < kGroupMaxEps) return 0;
  float d = -max / v0;
  float id = 1 / d;
  float sumqx = 0, sumq2 = 0;
  for (int j = 0; j < 32; ++j) {
    const float q = static_cast<float>(kIq4Levels[nearest_level(id * x[j])]);
    sumqx += w[j] * q * x[j];
    sumq2 += w[j] * q * q;
  }
  d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
  float best = d * sumqx;
  for (int t = -kTries; t <= kTries; ++t) {
    id = static_cast<float>(t + kIq4Levels[0]) / max;
    sumqx = sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = static_cast<float>(kIq4Levels[nearest_level(id * x[j])]);
      sumqx += w[j] * q * x[j];
      sumq2 += w[j] * q * q;
    }
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      d = sumqx / sumq2;
      best = d * sumqx;
    }
  }
  return d;
}

// iq4_group_scale over groups of 32 (group g: x + 32 g, weights w + 32 g), eight at a time on
// the AVX2 path.
void iq4_groups(int groups, const float* x, const float* w, float* scales) {
  int g = 0;
  if (simd_enabled())
    for (; g + 8 <= groups; g += 8) simd::iq4_scales_x8(x + 32 * g, w + 32 * g, scales + g);
  for (; g < groups; ++g) scales[g] = iq4_group_scale(x + 32 * g, w + 32 * g);
}

// IQ4 weights of `size` elements (a super-block): importance * sqrt(sigma2 + x^2), else x^2.
void iq4_weights(int size, const float* x, const float* qw, float* w) {
  float sigma2 = sum_squares(x, static_cast<size_t>(size));
  sigma2 *= 2.f / static_cast<float>(size);
  if (qw) importance_weights(qw, x, size, sigma2, w);
  else
    for (int j = 0; j < size; ++j) w[j] = x[j] * x[j];
}

// An IQ4 super-block of `size` elements (32 for IQ4_NL, 256 for IQ4_XS) from its group scales:
// IQ4_NL stores its one scale, IQ4_XS the group scales as 6-bit multiples of the super-block's d;
// each element is the level nearest to it over its group's stored scale.
void iq4_finish(int size, const float* x, const float* sc, uint8_t* d_out, uint8_t* qs, uint16_t* scales_h,
                uint8_t* scales_l) {
  uint8_t L[kSuper];
  if (size > 32) {
    float max_scale = 0, amax_scale = 0;
    for (int g = 0; g < size / 32; ++g)
      if (std::fabs(sc[g]) > amax_scale) {
        amax_scale = std::fabs(sc[g]);
        max_scale = sc[g];
      }
    *scales_h = 0;
    const float d = -max_scale / 32;
    put_f16(d_out, d);
    const float id = d != 0.0f ? 1 / d : 0.f;
    for (int g = 0; g < size / 32; ++g) {
      const int l = clamp_int(nearest_int(id * sc[g]), -32, 31);
      const float dl = d * static_cast<float>(l);
      const float idl = dl != 0.0f ? 1 / dl : 0.f;
      for (int j = 0; j < 32; ++j) L[32 * g + j] = static_cast<uint8_t>(nearest_level(idl * x[32 * g + j]));
      const int stored = l + 32;
      if (g % 2 == 0) scales_l[g / 2] = static_cast<uint8_t>(stored & 0xf);
      else scales_l[g / 2] = static_cast<uint8_t>(scales_l[g / 2] | ((stored & 0xf) << 4));
      *scales_h = static_cast<uint16_t>(*scales_h | ((stored >> 4) << (2 * g)));
    }
  } else {
    put_f16(d_out, sc[0]);
    const float id = sc[0] != 0.0f ? 1 / sc[0] : 0;
    for (int j = 0; j < 32; ++j) L[j] = static_cast<uint8_t>(nearest_level(id * x[j]));
  }
  for (int i = 0; i < size / 32; ++i)
    for (int j = 0; j < 16; ++j) qs[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
}

// Rows of blocks whose importance weights are given per column (the same for every row).
template <typename BlockFn>
void k_rows(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* qw, size_t block_bytes, BlockFn fn) {
  for (size_t r = 0; r < n_rows; ++r)
    for (size_t b = 0; b < n_per_row / kSuper; ++b, x += kSuper, y += block_bytes) fn(x, y, qw ? qw + kSuper * b : nullptr);
}

void decode_iq4(const uint8_t* qs, float dl, float* y) {
  for (int j = 0; j < 16; ++j) {
    y[j] = dl * static_cast<float>(kIq4Levels[qs[j] & 0xf]);
    y[j + 16] = dl * static_cast<float>(kIq4Levels[qs[j] >> 4]);
  }
}

}  // namespace

namespace quant_ref {

// ggml's make_qkx2_quants and make_qkx3_quants, which differ only when weights are null (no caller
// here passes null) and in how they catch a constant group (max == min, max <= min: the same test
// once min <= 0).
float levels_with_min(int n, int nmax, const float* x, const float* weights, uint8_t* levels, float* the_min,
                      uint8_t* trial, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max <= min) {
    std::memset(levels, 0, static_cast<size_t>(n));
    *the_min = -min;
    return 0.0f;
  }
  const float fmax_l = static_cast<float>(nmax);
  float iscale = fmax_l / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  auto error_of = [&](float diff) { return use_mad ? std::fabs(diff) : diff * diff; };
  for (int i = 0; i < n; ++i) {
    levels[i] = static_cast<uint8_t>(clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax));
    const float diff = scale * static_cast<float>(levels[i]) + min - x[i];
    best_error += weights[i] * error_of(diff);
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + fmax_l) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = clamp_int(nearest_int(iscale * (x[i] - min)), 0, nmax);
      trial[i] = static_cast<uint8_t>(l);
      const float w = weights[i], fl = static_cast<float>(l);
      sum_l += w * fl;
      sum_l2 += w * fl * fl;
      sum_xl += w * fl * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        const float diff = this_scale * static_cast<float>(trial[i]) + this_min - x[i];
        cur_error += weights[i] * error_of(diff);
      }
      if (cur_error < best_error) {
        std::memcpy(levels, trial, static_cast<size_t>(n));
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

void q4_0(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  for (size_t r = 0; r < n_rows; ++r, x += n_per_row, y += n_per_row / 32 * 18) legacy_row<false, false>(x, y, n_per_row, importance);
}
void q4_1(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  for (size_t r = 0; r < n_rows; ++r, x += n_per_row, y += n_per_row / 32 * 20) legacy_row<true, false>(x, y, n_per_row, importance);
}
void q5_0(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  for (size_t r = 0; r < n_rows; ++r, x += n_per_row, y += n_per_row / 32 * 22) legacy_row<false, true>(x, y, n_per_row, importance);
}
void q5_1(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  for (size_t r = 0; r < n_rows; ++r, x += n_per_row, y += n_per_row / 32 * 24) legacy_row<true, true>(x, y, n_per_row, importance);
}
void q2_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  k_rows(x, y, n_rows, n_per_row, importance, 84, q2_k_block);
}
void q3_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  k_rows(x, y, n_rows, n_per_row, importance, 110, q3_k_block);
}
void q4_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  k_rows(x, y, n_rows, n_per_row, importance, 144, q45_k_block<15>);
}
void q5_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  k_rows(x, y, n_rows, n_per_row, importance, 176, q45_k_block<31>);
}
void q6_k(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  k_rows(x, y, n_rows, n_per_row, importance, 210, q6_k_block);
}
void iq4_nl(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  const size_t blocks = n_per_row / 32;
  for (size_t r = 0; r < n_rows; ++r, x += n_per_row, y += blocks * 18)
    for (size_t b0 = 0; b0 < blocks; b0 += 8) {
      const int count = static_cast<int>(std::min<size_t>(8, blocks - b0));
      float w[kSuper], sc[8];
      for (int k = 0; k < count; ++k)
        iq4_weights(32, x + 32 * (b0 + k), importance ? importance + 32 * (b0 + k) : nullptr, w + 32 * k);
      iq4_groups(count, x + 32 * b0, w, sc);
      for (int k = 0; k < count; ++k) {
        uint8_t* yb = y + 18 * (b0 + k);
        iq4_finish(32, x + 32 * (b0 + k), sc + k, yb, yb + 2, nullptr, nullptr);
      }
    }
}
void iq4_xs(const float* x, uint8_t* y, size_t n_rows, size_t n_per_row, const float* importance) {
  k_rows(x, y, n_rows, n_per_row, importance, 136, [](const float* xb, uint8_t* yb, const float* qw) {
    float w[kSuper], sc[8];
    iq4_weights(kSuper, xb, qw, w);
    iq4_groups(8, xb, w, sc);
    uint16_t scales_h = 0;
    iq4_finish(kSuper, xb, sc, yb, yb + 8, &scales_h, yb + 4);
    std::memcpy(yb + 2, &scales_h, 2);
  });
}

}  // namespace quant_ref

namespace block_kernels {

void quantize_q4_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q4_0(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q4_1(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q4_1(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q5_0(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q5_0(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q5_1(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q5_1(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q2_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q2_k(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q3_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q3_k(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q4_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q4_k(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q5_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q5_k(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_q6_k(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::q6_k(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_iq4_nl(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::iq4_nl(src, dst, n_rows, n_per_row, p.importance);
}
void quantize_iq4_xs(const float* src, uint8_t* dst, size_t n_rows, size_t n_per_row, const QuantParams& p) {
  quant_ref::iq4_xs(src, dst, n_rows, n_per_row, p.importance);
}

void dequantize_iq4_nl(const uint8_t* src, float* dst, size_t n, const QuantParams&) {
  for (size_t b = 0; b < n / 32; ++b, src += 18, dst += 32) decode_iq4(src + 2, get_f16(src), dst);
}

// IQ4_XS (136 bytes): d, scales_h (2 bits per group), scales_l[4] (4 bits per group), qs[128].
void dequantize_iq4_xs(const uint8_t* src, float* dst, size_t n, const QuantParams&) {
  for (size_t b = 0; b < n / kSuper; ++b, src += 136) {
    const float d = get_f16(src);
    uint16_t scales_h;
    std::memcpy(&scales_h, src + 2, 2);
    for (int g = 0; g < 8; ++g, dst += 32) {
      const int ls = ((src[4 + g / 2] >> (4 * (g % 2))) & 0xf) | (((scales_h >> (2 * g)) & 3) << 4);
      decode_iq4(src + 8 + 16 * g, d * static_cast<float>(ls - 32), dst);
    }
  }
}

}  // namespace block_kernels
}  // namespace pyconv

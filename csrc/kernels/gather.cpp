#include "kernels/gather.h"

#include <algorithm>
#include <cstring>

namespace pyconv {
namespace {

// Tiles keep both the read and the write side of a transpose inside L1.
constexpr int64_t kTile = 32;

// Elements move as T through memcpy: map offsets have any alignment, and a memcpy of sizeof(T)
// bytes compiles to one load or store.
template <typename T>
void transpose_2d(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols, int64_t s_row, int64_t s_col,
                  int64_t d_row, int64_t d_col) {
  constexpr size_t kSize = sizeof(T);
  for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
    const int64_t i1 = std::min(rows, i0 + kTile);
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t j1 = std::min(cols, j0 + kTile);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) {
          T v;
          std::memcpy(&v, src + static_cast<size_t>(i * s_row + j * s_col) * kSize, kSize);
          std::memcpy(dst + static_cast<size_t>(i * d_row + j * d_col) * kSize, &v, kSize);
        }
    }
  }
}

void copy_2d(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t cols, int64_t s_row, int64_t s_col,
             int64_t d_row, int64_t d_col, size_t eb) {
  if (s_col == 1 && d_col == 1) {
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(dst + static_cast<size_t>(i * d_row) * eb, src + static_cast<size_t>(i * s_row) * eb,
                  static_cast<size_t>(cols) * eb);
    return;
  }
  switch (eb) {
    case 1:
      return transpose_2d<uint8_t>(src, dst, rows, cols, s_row, s_col, d_row, d_col);
    case 2:
      return transpose_2d<uint16_t>(src, dst, rows, cols, s_row, s_col, d_row, d_col);
    case 4:
      return transpose_2d<uint32_t>(src, dst, rows, cols, s_row, s_col, d_row, d_col);
    case 8:
      return transpose_2d<uint64_t>(src, dst, rows, cols, s_row, s_col, d_row, d_col);
    default:  // whole quant blocks move only along contiguous runs; other sizes copy per element
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          std::memcpy(dst + static_cast<size_t>(i * d_row + j * d_col) * eb,
                      src + static_cast<size_t>(i * s_row + j * s_col) * eb, eb);
  }
}

void copy_rec(const uint8_t* src, uint8_t* dst, const StridedBox& b, int d, size_t eb) {
  if (d == b.ndim - 2) {
    copy_2d(src, dst, b.shape[d], b.shape[d + 1], b.src_strides[d], b.src_strides[d + 1], b.dst_strides[d],
            b.dst_strides[d + 1], eb);
    return;
  }
  for (int64_t i = 0; i < b.shape[d]; ++i)
    copy_rec(src + static_cast<size_t>(i * b.src_strides[d]) * eb, dst + static_cast<size_t>(i * b.dst_strides[d]) * eb,
             b, d + 1, eb);
}

}  // namespace

StridedBox simplify(const StridedBox& box) {
  StridedBox out;
  for (int d = 0; d < box.ndim; ++d) {
    if (box.shape[d] == 1) continue;
    if (box.shape[d] == 0) {
      out = StridedBox{};
      out.ndim = 1;
      return out;
    }
    out.shape[out.ndim] = box.shape[d];
    out.src_strides[out.ndim] = box.src_strides[d];
    out.dst_strides[out.ndim] = box.dst_strides[d];
    ++out.ndim;
  }
  if (out.ndim == 0) {
    out.ndim = 1;
    out.shape[0] = 1;
    out.src_strides[0] = out.dst_strides[0] = 1;
    return out;
  }
  // merge dim d into d-1 when stepping d-1 equals stepping d across its whole extent, on both sides
  int w = 0;
  for (int d = 1; d < out.ndim; ++d) {
    if (out.src_strides[w] == out.src_strides[d] * out.shape[d] && out.dst_strides[w] == out.dst_strides[d] * out.shape[d]) {
      out.shape[w] *= out.shape[d];
      out.src_strides[w] = out.src_strides[d];
      out.dst_strides[w] = out.dst_strides[d];
    } else {
      ++w;
      out.shape[w] = out.shape[d];
      out.src_strides[w] = out.src_strides[d];
      out.dst_strides[w] = out.dst_strides[d];
    }
  }
  out.ndim = w + 1;
  return out;
}

void copy_strided(const uint8_t* src, uint8_t* dst, const StridedBox& box, size_t elem_bytes) {
  const StridedBox b = simplify(box);
  if (b.ndim == 1) {
    if (b.src_strides[0] == 1 && b.dst_strides[0] == 1) {
      std::memcpy(dst, src, static_cast<size_t>(b.shape[0]) * elem_bytes);
      return;
    }
    copy_2d(src, dst, 1, b.shape[0], 0, b.src_strides[0], 0, b.dst_strides[0], elem_bytes);
    return;
  }
  copy_rec(src, dst, b, 0, elem_bytes);
}

}  // namespace pyconv

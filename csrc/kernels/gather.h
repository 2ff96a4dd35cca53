// Strided copies that turn a view of a source (slice, permutation, transpose) into a dense box.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyconv {

constexpr int kMaxDims = 8;

// An N-d box copied element by element: element i (multi-index) is read at
// src + sum(i[d] * src_strides[d]) and written at dst + sum(i[d] * dst_strides[d]); strides count
// elements of `elem_bytes` bytes.
struct StridedBox {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t src_strides[kMaxDims] = {};
  int64_t dst_strides[kMaxDims] = {};
};

void copy_strided(const uint8_t* src, uint8_t* dst, const StridedBox& box, size_t elem_bytes);

// Drops dims of extent 1 and merges neighbours that are contiguous in both source and destination,
// so a box that is really one run becomes 1-d.
StridedBox simplify(const StridedBox& box);

}  // namespace pyconv

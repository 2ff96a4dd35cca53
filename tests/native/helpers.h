// Helpers shared by the native tests: a scratch folder, files in and out, plans built tersely.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/plan.h"

namespace pyconv::testing {

// A fresh folder under $TMPDIR (or /tmp), removed with everything in it when the object goes.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const void* data, size_t n);
template <typename T>
void write_file(const std::string& path, const std::vector<T>& values) {
  write_file(path, values.data(), values.size() * sizeof(T));
}
std::vector<uint8_t> read_file(const std::string& path);
bool file_exists(const std::string& path);
void remove_file(const std::string& path);

template <typename T>
std::vector<T> as(const std::vector<uint8_t>& bytes, size_t offset = 0) {
  std::vector<T> out((bytes.size() - offset) / sizeof(T));
  std::memcpy(out.data(), bytes.data() + offset, out.size() * sizeof(T));
  return out;
}

// Row-major strides of a shape, in elements (wrapping around 2^64 for extreme shapes).
std::vector<int64_t> row_major(const std::vector<int64_t>& shape);

// A source of one segment: `nbytes` bytes of input `file` at `offset`.
Source one_segment(DType dtype, uint32_t file, uint64_t offset, uint64_t nbytes);
// A part copying a whole row-major source of `shape` to the start of a tensor laid out as `shape`.
Part whole(uint32_t source, const std::vector<int64_t>& shape);
// A tensor whose layout is its shape.
Tensor tensor(const std::string& name, const std::vector<int64_t>& shape, DType out, std::vector<Part> parts,
              uint32_t file = 0);
// A raw output file holding the tensors one after another; their offsets are set.
OutputFileSpec raw_file(const std::string& path, std::vector<Tensor>& tensors);

}  // namespace pyconv::testing

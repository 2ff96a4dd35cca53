// Read-only memory map of an input file. Pages are read through the map and handed back to the
// kernel (MADV_DONTNEED) once consumed, so resident memory tracks the work in flight, not the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace pyconv {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  // Pointer to bytes [offset, offset + n); throws if the range is outside the file.
  const uint8_t* data(uint64_t offset, uint64_t n) const;
  // Drop the pages wholly inside [offset, offset + n) from this process; they stay in the page cache.
  void release(uint64_t offset, uint64_t n) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint8_t* base_ = nullptr;
};

}  // namespace pyconv

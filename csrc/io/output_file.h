// An output file written by many threads at known offsets. Space is reserved up front so a full
// disk fails before any tensor is converted; a file that is not committed is removed.
#pragma once
#include <cstdint>
#include <string>

namespace pyconv {

class OutputFile {
 public:
  // Creates `path` (which must not exist) and reserves `size` bytes.
  OutputFile(const std::string& path, uint64_t size);
  ~OutputFile();  // removes the file unless commit() succeeded
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  // Writes all of [data, data + n) at `offset`; safe to call from several threads.
  void write_at(const void* data, uint64_t n, uint64_t offset) const;
  // Flushes to stable storage and keeps the file.
  void commit();

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool committed_ = false;
};

}  // namespace pyconv

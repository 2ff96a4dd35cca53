#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace pyconv {
namespace {

uint64_t page_size() {
  static const uint64_t size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error(std::string("cannot open: ") + std::strerror(errno)).in_file(path);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    ::close(fd_);
    throw Error(std::string("cannot stat: ") + std::strerror(err)).in_file(path);
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    ::close(fd_);
    throw Error(std::string("cannot map: ") + std::strerror(err)).in_file(path);
  }
  base_ = static_cast<uint8_t*>(p);
  ::madvise(base_, size_, MADV_SEQUENTIAL);
}

MappedFile::~MappedFile() {
  if (base_) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const uint8_t* MappedFile::data(uint64_t offset, uint64_t n) const {
  if (offset > size_ || n > size_ - offset)
    throw Error("byte range [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") is outside the file (" +
                std::to_string(size_) + " bytes)")
        .in_file(path_);
  return base_ + offset;
}

void MappedFile::release(uint64_t offset, uint64_t n) const {
  if (!base_ || offset >= size_) return;
  if (n > size_ - offset) n = size_ - offset;
  const uint64_t ps = page_size();
  const uint64_t start = (offset + ps - 1) / ps * ps;
  uint64_t end = offset + n == size_ ? (size_ + ps - 1) / ps * ps : (offset + n) / ps * ps;
  if (end > start) ::madvise(base_ + start, end - start, MADV_DONTNEED);
}

}  // namespace pyconv

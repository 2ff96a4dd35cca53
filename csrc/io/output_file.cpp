#include "io/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace pyconv {

OutputFile::OutputFile(const std::string& path, uint64_t size) : path_(path), size_(size) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(std::string("cannot create: ") + std::strerror(errno)).in_file(path);
  if (size == 0) return;
  // posix_fallocate reports ENOSPC now rather than halfway through; filesystems without it
  // (EOPNOTSUPP, EINVAL) fall back to a sparse file of the right size.
  int rc = ::posix_fallocate(fd_, 0, static_cast<off_t>(size));
  if (rc == EOPNOTSUPP || rc == EINVAL) rc = ::ftruncate(fd_, static_cast<off_t>(size)) == 0 ? 0 : errno;
  if (rc != 0) {
    ::close(fd_);
    ::unlink(path.c_str());
    fd_ = -1;
    throw Error("cannot reserve " + std::to_string(size) + " bytes: " + std::strerror(rc)).in_file(path);
  }
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(path_.c_str());
}

void OutputFile::write_at(const void* data, uint64_t n, uint64_t offset) const {
  if (offset > size_ || n > size_ - offset)
    throw Error("write [" + std::to_string(offset) + ", " + std::to_string(offset + n) + ") past the planned size " +
                std::to_string(size_))
        .in_file(path_);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const uint64_t start = offset, length = n;
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("write failed: ") + std::strerror(errno)).in_file(path_);
    }
    if (w == 0) throw Error("write failed: no progress").in_file(path_);
    p += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
#ifdef __linux__
  // Start writing the range back now, without waiting: the disk works while the next chunks are
  // converted, the final fsync finds little left to flush, and dirty pages stay few on small
  // machines. Advisory only; fsync in commit() reports any write error.
  ::sync_file_range(fd_, static_cast<off_t>(start), static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);
#endif
}

void OutputFile::commit() {
  if (::fsync(fd_) != 0) throw Error(std::string("fsync failed: ") + std::strerror(errno)).in_file(path_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw Error(std::string("close failed: ") + std::strerror(errno)).in_file(path_);
  }
  fd_ = -1;
  committed_ = true;
}

}  // namespace pyconv

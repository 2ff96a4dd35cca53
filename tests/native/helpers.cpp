#include "helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "core/dtype.h"

namespace pyconv::testing {

ScratchDir::ScratchDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/pyconv-native-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot create a scratch folder");
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  if (DIR* d = ::opendir(path_.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") ::unlink((path_ + "/" + name).c_str());
    }
    ::closedir(d);
  }
  ::rmdir(path_.c_str());
}

void write_file(const std::string& path, const void* data, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  const bool ok = n == 0 || ::write(fd, data, n) == static_cast<ssize_t>(n);
  ::close(fd);
  if (!ok) throw std::runtime_error("short write to " + path);
}

std::vector<uint8_t> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot read " + path);
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.insert(out.end(), buf, buf + n);
  ::close(fd);
  return out;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void remove_file(const std::string& path) { ::unlink(path.c_str()); }

std::vector<int64_t> row_major(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  // in unsigned arithmetic, which wraps: the fuzzer's extreme shapes get strides the engine refuses
  for (size_t d = shape.size(); d-- > 1;)
    strides[d - 1] = static_cast<int64_t>(static_cast<uint64_t>(strides[d]) * static_cast<uint64_t>(shape[d]));
  return strides;
}

Source one_segment(DType dtype, uint32_t file, uint64_t offset, uint64_t nbytes) {
  Source s;
  s.dtype = dtype;
  s.segments.push_back({file, offset, nbytes});
  return s;
}

Part whole(uint32_t source, const std::vector<int64_t>& shape) {
  Part p;
  p.source = source;
  p.src_strides = row_major(shape);
  p.dst_start.assign(shape.size(), 0);
  p.shape = shape;
  return p;
}

Tensor tensor(const std::string& name, const std::vector<int64_t>& shape, DType out, std::vector<Part> parts,
              uint32_t file) {
  Tensor t;
  t.name = name;
  t.shape = shape;
  t.layout = shape;
  t.out = out;
  t.file = file;
  t.parts = std::move(parts);
  return t;
}

OutputFileSpec raw_file(const std::string& path, std::vector<Tensor>& tensors) {
  OutputFileSpec f;
  f.path = path;
  f.container = Container::Raw;
  for (Tensor& t : tensors) {
    t.offset = f.size;
    f.size += tensor_nbytes(t.out, numel(t.shape));
  }
  return f;
}

}  // namespace pyconv::testing

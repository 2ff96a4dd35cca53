// One exception type for the whole core; bindings map it to pyconv.ConversionError. Beside its
// message it carries where the problem is, as far as the thrower and its callers know: the plan
// tensor (by index) and the file (an input or an output path). Callers read those fields, never
// the message, to report them.
#pragma once
#include <cstdint>
#include <exception>
#include <string>

namespace pyconv {

class Error : public std::exception {
 public:
  explicit Error(std::string message) : message_(std::move(message)) { compose(); }

  const std::string& message() const { return message_; }
  bool has_tensor() const { return tensor_ >= 0; }
  uint32_t tensor() const { return static_cast<uint32_t>(tensor_); }  // index into Plan::tensors
  const std::string& file() const { return file_; }  // empty: no file is to blame

  // Where the error happened, unless a deeper caller has said so already.
  Error& in_tensor(uint32_t index) {
    if (tensor_ < 0) tensor_ = index;
    compose();
    return *this;
  }
  Error& in_file(const std::string& path) {
    if (file_.empty()) file_ = path;
    compose();
    return *this;
  }

  // "file: tensor #i: message", for C++ callers and logs.
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  void compose() {
    what_.clear();
    if (!file_.empty()) what_ += file_ + ": ";
    if (tensor_ >= 0) what_ += "tensor #" + std::to_string(tensor_) + ": ";
    what_ += message_;
  }

  std::string message_, file_, what_;
  int64_t tensor_ = -1;
};

// Raised when the caller asked the engine to stop (Ctrl-C, progress callback said so).
class Cancelled : public Error {
 public:
  Cancelled() : Error("conversion cancelled") {}
};

}  // namespace pyconv

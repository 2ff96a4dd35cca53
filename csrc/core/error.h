// One exception type for the whole core; bindings map it to pyconv.ConversionError.
#pragma once
#include <stdexcept>
#include <string>

namespace pyconv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Raised when the caller asked the engine to stop (Ctrl-C, progress callback said so).
class Cancelled : public Error {
 public:
  Cancelled() : Error("conversion cancelled") {}
};

}  // namespace pyconv

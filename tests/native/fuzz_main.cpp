// A plain driver for the plan fuzzer, for compilers without libFuzzer (gcc): runs the files given on
// the command line, or N inputs of random bytes from a seed. Exits non-zero on the first finding.
//   plan_fuzz [-runs=N] [-seed=S] [FILE...]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "plan_fuzzer.h"

namespace {

bool run_one(const std::vector<uint8_t>& input, const std::string& what) {
  try {
    LLVMFuzzerTestOneInput(input.data(), input.size());
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "plan_fuzz: %s: %s\n", what.c_str(), e.what());
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  long runs = 1000;
  unsigned long seed = 1;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("-runs=", 0) == 0) runs = std::stol(arg.substr(6));
    else if (arg.rfind("-seed=", 0) == 0) seed = std::stoul(arg.substr(6));
    else files.push_back(arg);
  }
  for (const std::string& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!run_one(bytes, f)) return 1;
  }
  if (!files.empty()) return 0;
  std::mt19937_64 rng(seed);
  for (long r = 0; r < runs; ++r) {
    std::vector<uint8_t> bytes(rng() % 600);
    for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
    if (!run_one(bytes, "run " + std::to_string(r) + " of seed " + std::to_string(seed))) {
      std::fprintf(stderr, "plan_fuzz: input (hex): ");
      for (uint8_t b : bytes) std::fprintf(stderr, "%02x", b);
      std::fprintf(stderr, "\n");
      return 1;
    }
  }
  std::printf("plan_fuzz: %ld random plans from seed %lu, %lu laid out, %lu executed: no finding\n", runs, seed,
              static_cast<unsigned long>(plan_fuzz_counts.laid_out), static_cast<unsigned long>(plan_fuzz_counts.executed));
  return 0;
}

// The plan fuzzer's entry point and its tally of how far inputs got.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

struct PlanFuzzCounts {
  uint64_t laid_out = 0;  // plans validate and layout accepted (and small enough to run)
  uint64_t executed = 0;  // of those, plans that ran to the end, the same bytes twice
};
extern PlanFuzzCounts plan_fuzz_counts;

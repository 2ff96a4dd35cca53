// Runs a plan: maps the inputs, reserves the outputs, then moves every tensor chunk by chunk on a
// thread pool from the maps through gather -> ops -> cast/quantize to its final offset (pwrite).
// Chunk boundaries depend only on the plan, never on the thread count, so output bytes do not either.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/plan.h"

namespace pyconv {

struct ExecOptions {
  int threads = 0;                    // 0: every CPU this process may use
  uint64_t chunk_bytes = 4ull << 20;  // work buffer per chunk and thread
};

// What the engine decided for tensors whose treatment depends on their values.
struct TensorReport {
  uint32_t tensor = 0;          // index into Plan::tensors
  bool ternarized = false;      // absmean applied
  bool already_ternary = false; // one non-zero magnitude found, packed as it was
  float scale = 0.0f;           // I2_S tensor scale, or the ternary magnitude
  double mean_abs = 0.0;
};

// Called on the calling thread about ten times a second with the bytes written so far and, per
// output file, the length of its fully written prefix; returning false cancels the run.
using ProgressFn = std::function<bool(uint64_t done, uint64_t total, const std::vector<uint64_t>& prefixes)>;

// Lays the plan out (if not done yet), writes every output file and fsyncs it. On any error or
// cancellation the output files are removed and Error/Cancelled is thrown.
std::vector<TensorReport> execute(Plan& plan, const ExecOptions& options, const ProgressFn& progress);

int default_threads();

}  // namespace pyconv

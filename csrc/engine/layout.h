// Container layout: computes every tensor's offset and each file's header and size before a byte
// of tensor data moves, so the executor can write each chunk straight to its final place.
#pragma once
#include <string>

#include "engine/plan.h"

namespace pyconv {

// Checks every index, bound and type rule of the plan; throws Error naming the tensor.
void validate(const Plan& plan);
// Validates, then fills Tensor::offset/nbytes and OutputFileSpec::blobs/size.
void layout(Plan& plan);

// Header pieces, exposed for tests.
std::string safetensors_dtype_name(DType t);
std::string json_escape(const std::string& s);

}  // namespace pyconv

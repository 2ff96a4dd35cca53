// Container layout: computes every tensor's offset and each file's header and size before a byte
// of tensor data moves, so the executor can write each chunk straight to its final place.
#pragma once
#include <string>
#include <vector>

#include "engine/plan.h"

namespace pyconv {

// Checks every index, bound and type rule of the plan; throws Error naming the tensor.
void validate(const Plan& plan);
// Whether the tensor's blocks are packed from its sources' codes and scales as they are (its type's
// pack, core/dtype.h): every part reads whole blocks of such a source, nothing else is done.
bool packs(const Plan& plan, const Tensor& t);
// Validates, then fills Tensor::offset/nbytes and OutputFileSpec::blobs/size.
void layout(Plan& plan);

// The bytes of each of a source's segments that hold its blocks: all but the type's tail, which is
// the source's last tail_bytes bytes. Throws Error when a segment's share is not a whole number
// of blocks or the source is shorter than its tail.
std::vector<uint64_t> block_bytes_per_segment(const Source& s);

}  // namespace pyconv

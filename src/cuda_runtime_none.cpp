// Implementation of cuda_runtime.hpp for builds without nvcc: every query answers "no CUDA".
#include "cuda_runtime.hpp"

#include <stdexcept>

namespace ditto::cuda {

bool compiled() { return false; }

int runtime_version() { return 0; }

DeviceQuery query_devices() { return DeviceQuery{{}, "built without CUDA"}; }

bool pinned_memory_available() { return false; }

void* alloc_pinned(std::size_t) {
    throw std::runtime_error("page-locked memory needs a build with CUDA");
}

void free_pinned(void*) noexcept {}

}  // namespace ditto::cuda

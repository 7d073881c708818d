// The slice of the CUDA runtime that the core needs, behind one interface so that the rest of
// the library compiles identically with and without CUDA. Two implementations exist:
// cuda_runtime.cu (built when nvcc is found) and cuda_runtime_none.cpp (built otherwise).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace ditto::cuda {

struct DeviceInfo {
    int ordinal = 0;
    std::string name;
    int compute_major = 0;
    int compute_minor = 0;
    std::size_t total_memory = 0;  // bytes
};

struct DeviceQuery {
    std::vector<DeviceInfo> devices;
    // Why `devices` is empty ("built without CUDA", "no CUDA driver", ...); empty when it is not.
    std::string reason;
};

// True when this build compiled the CUDA sources.
bool compiled();

// CUDA runtime version this build links (e.g. 13000), 0 without CUDA.
int runtime_version();

// Enumerates the devices the runtime can see. Never throws: a machine without a GPU or a driver
// is an ordinary answer, not an error.
DeviceQuery query_devices();

// True when page-locked allocation can be used: CUDA compiled in and at least one device visible.
// The answer is computed once per process.
bool pinned_memory_available();

// Page-locked (cudaHostAlloc, portable) host memory. Throws std::runtime_error when unavailable.
void* alloc_pinned(std::size_t bytes);
void free_pinned(void* ptr) noexcept;

}  // namespace ditto::cuda

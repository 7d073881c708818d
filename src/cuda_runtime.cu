// CUDA implementation of cuda_runtime.hpp. cudart is linked statically, so importing the module
// needs no libcudart on the user's machine; the driver (libcuda) is looked up at the first call
// and its absence is reported, never fatal.
#include "cuda_runtime.hpp"

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace ditto::cuda {

bool compiled() { return true; }

int runtime_version() {
    int version = 0;
    return cudaRuntimeGetVersion(&version) == cudaSuccess ? version : 0;
}

namespace {

std::string version_string(int version) {
    return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

// cudart says "driver version is insufficient" both for an old driver and for none at all;
// tell the two apart, since the remedies differ.
std::string explain(cudaError_t status) {
    if (status == cudaErrorNoDevice) return "no CUDA device";
    if (status == cudaErrorInsufficientDriver) {
        int driver = 0;
        cudaDriverGetVersion(&driver);
        if (driver == 0) return "no NVIDIA driver found";
        return "NVIDIA driver supports CUDA " + version_string(driver) +
               ", older than the CUDA " + version_string(runtime_version()) +
               " runtime of this build";
    }
    return cudaGetErrorString(status);
}

}  // namespace

DeviceQuery query_devices() {
    DeviceQuery query;
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        query.reason = explain(status);
        cudaGetLastError();  // reset the last-error slot so later runtime calls start clean
        return query;
    }
    if (count == 0) {
        query.reason = "no CUDA device";
        return query;
    }
    for (int ordinal = 0; ordinal < count; ++ordinal) {
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, ordinal) != cudaSuccess) continue;
        query.devices.push_back(
            DeviceInfo{ordinal, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
    }
    return query;
}

bool pinned_memory_available() {
    static const bool available = !query_devices().devices.empty();
    return available;
}

void* alloc_pinned(std::size_t bytes) {
    if (!pinned_memory_available())
        throw std::runtime_error("page-locked memory needs a visible CUDA device");
    void* ptr = nullptr;
    const cudaError_t status = cudaHostAlloc(&ptr, bytes, cudaHostAllocPortable);
    if (status != cudaSuccess)
        throw std::runtime_error(std::string("cudaHostAlloc of ") + std::to_string(bytes) +
                                 " bytes failed: " + cudaGetErrorString(status));
    return ptr;
}

void free_pinned(void* ptr) noexcept {
    if (ptr != nullptr) cudaFreeHost(ptr);
}

}  // namespace ditto::cuda

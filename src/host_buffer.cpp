#include "host_buffer.hpp"

#include "cuda_runtime.hpp"

#include <unistd.h>

#include <cstdlib>
#include <new>
#include <stdexcept>

namespace ditto {

std::string to_string(MemoryKind kind) {
    return kind == MemoryKind::CudaPinned ? "cuda_pinned" : "aligned";
}

std::size_t page_size() {
    static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return size;
}

HostBuffer::HostBuffer(std::size_t bytes, PinPolicy policy) : size_(bytes) {
    if (bytes == 0) throw std::invalid_argument("HostBuffer needs a non-zero size");
    const bool pin = policy == PinPolicy::Require ||
                     (policy == PinPolicy::Auto && cuda::pinned_memory_available());
    if (pin) {
        // cudaHostAlloc returns page-aligned memory.
        data_ = static_cast<std::uint8_t*>(cuda::alloc_pinned(bytes));
        kind_ = MemoryKind::CudaPinned;
        return;
    }
    const std::size_t page = page_size();
    const std::size_t rounded = (bytes + page - 1) / page * page;  // aligned_alloc's contract
    data_ = static_cast<std::uint8_t*>(std::aligned_alloc(page, rounded));
    if (data_ == nullptr) throw std::bad_alloc();
    kind_ = MemoryKind::Aligned;
}

HostBuffer::~HostBuffer() {
    if (kind_ == MemoryKind::CudaPinned)
        cuda::free_pinned(data_);
    else
        std::free(data_);
}

}  // namespace ditto

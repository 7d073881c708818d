// One owned block of page-aligned host memory: page-locked through CUDA when a device is usable
// (so copies to and from the GPU can be asynchronous), plain aligned memory otherwise.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ditto {

enum class MemoryKind { CudaPinned, Aligned };

// What the caller asks for: pinned when possible, pinned or fail, or plain.
enum class PinPolicy { Auto, Require, Never };

std::string to_string(MemoryKind kind);

// Page size of this machine; every HostBuffer starts on such a boundary.
std::size_t page_size();

class HostBuffer {
public:
    HostBuffer(std::size_t bytes, PinPolicy policy);
    ~HostBuffer();
    HostBuffer(const HostBuffer&) = delete;
    HostBuffer& operator=(const HostBuffer&) = delete;

    std::uint8_t* data() const { return data_; }
    std::size_t size() const { return size_; }
    MemoryKind kind() const { return kind_; }

private:
    std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    MemoryKind kind_ = MemoryKind::Aligned;
};

}  // namespace ditto

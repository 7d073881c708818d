// FrameRing: N frame slots of H x W x C bytes in one host buffer, handed between producers
// (renderers) and consumers (the frame iterator, the video writer) without copying.
//
// Slot life cycle:  Free --acquire--> Writing --commit(index)--> Committed --take--> Reading
//                   Writing --abandon--> Retired;   Reading --release--> Retired
//                   Retired --(no pins left)--> Free
//
// Pins are how array views stay safe: every view handed to Python pins its slot, and a slot is
// never recycled while it is pinned, so a view kept past release() keeps reading its own frame
// (the producer waits for the slot instead of overwriting it).
//
// Ordering: consumers receive frames in increasing index order, starting at 0 (or the index set
// by reset_sequence). A committed index must lie in [next, next + slots): with every slot
// holding a distinct index from that window, the frame the consumer waits for always has a slot
// or can get one, so an out-of-window commit is a caller error, reported at once rather than
// becoming a deadlock later.
//
// Thread safety: every method may be called from any thread. Blocking calls take a deadline so
// that callers holding an interpreter lock can wait in slices and stay interruptible.
#pragma once

#include "host_buffer.hpp"

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

namespace ditto {

// Raised to every waiter, and to every later call that needs a producer or a new frame, once
// the ring is closed.
class RingClosed : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct FrameShape {
    std::size_t height = 0;
    std::size_t width = 0;
    std::size_t channels = 0;
    std::size_t bytes() const { return height * width * channels; }
};

struct RingCounts {
    std::size_t free = 0;
    std::size_t writing = 0;
    std::size_t committed = 0;
    std::size_t reading = 0;
    std::size_t retired = 0;  // released or abandoned, still pinned by live views
};

struct TakenFrame {
    std::size_t slot;
    std::int64_t index;
};

class FrameRing {
public:
    using Clock = std::chrono::steady_clock;
    using Deadline = std::optional<Clock::time_point>;  // nullopt: wait without limit

    FrameRing(std::size_t slots, FrameShape shape, PinPolicy policy);

    // Producer side.
    std::optional<std::size_t> acquire(Deadline deadline);  // nullopt on timeout
    void commit(std::size_t slot, std::int64_t index);
    void abandon(std::size_t slot);

    // Consumer side.
    std::optional<TakenFrame> take(Deadline deadline);  // nullopt on timeout
    void release(std::size_t slot);

    // Views.
    void pin(std::size_t slot);
    void unpin(std::size_t slot) noexcept;

    // Wakes every waiter with RingClosed. Frames already committed in order can still be taken.
    void close();
    bool closed() const;

    // Sets the index the consumer expects next; only while no frame is committed or in flight.
    void reset_sequence(std::int64_t next_index);
    std::int64_t next_index() const;

    std::uint8_t* slot_data(std::size_t slot) const;
    std::size_t slot_count() const { return states_.size(); }
    std::size_t slot_stride() const { return stride_; }
    FrameShape shape() const { return shape_; }
    MemoryKind memory_kind() const { return buffer_.kind(); }
    RingCounts counts() const;

private:
    enum class State { Free, Writing, Committed, Reading, Retired };

    void check_slot(std::size_t slot) const;
    void retire_locked(std::size_t slot);  // Retired, and Free at once when nothing pins it
    bool wait_locked(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                     const Deadline& deadline);

    FrameShape shape_;
    std::size_t stride_;  // bytes between slots: the frame size rounded up to a page
    HostBuffer buffer_;

    mutable std::mutex mutex_;
    std::condition_variable slot_freed_;
    std::condition_variable frame_committed_;
    std::vector<State> states_;
    std::vector<std::size_t> pins_;
    std::vector<std::int64_t> committed_index_;  // per slot, valid while Committed
    std::vector<std::size_t> free_slots_;        // stack of Free slots
    // pending_[index % slots] is the Committed slot holding `index`, or npos. Window-unique.
    std::vector<std::size_t> pending_;
    std::int64_t next_index_ = 0;
    bool closed_ = false;

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);
};

}  // namespace ditto

#include "frame_ring.hpp"

#include <string>

namespace ditto {

namespace {

// Sizes whose products would wrap around are refused here, before they reach an allocator.
constexpr std::size_t kMaxRingBytes = std::size_t{1} << 40;

std::size_t padded_stride(const FrameShape& shape) {
    if (shape.height == 0 || shape.width == 0 || shape.channels == 0)
        throw std::invalid_argument("FrameRing frame shape must be non-zero in every dimension");
    if (shape.height > kMaxRingBytes / shape.width || shape.height * shape.width > kMaxRingBytes / shape.channels)
        throw std::invalid_argument("FrameRing frame shape " + std::to_string(shape.height) + "x" +
                                    std::to_string(shape.width) + "x" + std::to_string(shape.channels) +
                                    " is too large");
    const std::size_t page = page_size();
    return (shape.bytes() + page - 1) / page * page;
}

std::size_t checked_total(std::size_t slots, std::size_t stride) {
    if (slots == 0) throw std::invalid_argument("FrameRing needs at least one slot");
    if (slots > kMaxRingBytes / stride)
        throw std::invalid_argument("FrameRing of " + std::to_string(slots) + " slots of " + std::to_string(stride) +
                                    " bytes is too large");
    return slots * stride;
}

}  // namespace

FrameRing::FrameRing(std::size_t slots, FrameShape shape, PinPolicy policy)
    : shape_(shape),
      stride_(padded_stride(shape)),
      buffer_(checked_total(slots, stride_), policy),
      states_(slots, State::Free),
      pins_(slots, 0),
      committed_index_(slots, 0),
      pending_(slots, npos) {
    free_slots_.reserve(slots);
    // Stack order: slot 0 is handed out first.
    for (std::size_t s = slots; s-- > 0;) free_slots_.push_back(s);
}

void FrameRing::check_slot(std::size_t slot) const {
    if (slot >= states_.size())
        throw std::out_of_range("slot " + std::to_string(slot) + " does not exist (ring has " +
                                std::to_string(states_.size()) + ")");
}

bool FrameRing::wait_locked(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                            const Deadline& deadline) {
    if (!deadline) {
        cv.wait(lock);
        return true;
    }
    return cv.wait_until(lock, *deadline) == std::cv_status::no_timeout;
}

std::optional<std::size_t> FrameRing::acquire(Deadline deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        if (closed_) throw RingClosed("FrameRing is closed: no slot can be acquired");
        if (!free_slots_.empty()) break;
        if (!wait_locked(lock, slot_freed_, deadline) && free_slots_.empty() && !closed_)
            return std::nullopt;
    }
    const std::size_t slot = free_slots_.back();
    free_slots_.pop_back();
    states_[slot] = State::Writing;
    return slot;
}

void FrameRing::commit(std::size_t slot, std::int64_t index) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        check_slot(slot);
        if (states_[slot] != State::Writing)
            throw std::logic_error("slot " + std::to_string(slot) +
                                   " is not held by a producer; commit needs an acquired slot");
        const auto window = static_cast<std::int64_t>(states_.size());
        if (index < next_index_ || index >= next_index_ + window)
            throw std::invalid_argument(
                "frame index " + std::to_string(index) + " is outside the ring window [" +
                std::to_string(next_index_) + ", " + std::to_string(next_index_ + window) +
                "): indices run consecutively and at most " + std::to_string(window) +
                " frames ahead of the consumer");
        std::size_t& pending = pending_[static_cast<std::size_t>(index % window)];
        if (pending != npos)
            throw std::invalid_argument("frame index " + std::to_string(index) +
                                        " is already committed");
        pending = slot;
        committed_index_[slot] = index;
        states_[slot] = State::Committed;
    }
    frame_committed_.notify_all();
}

void FrameRing::abandon(std::size_t slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_slot(slot);
    if (states_[slot] != State::Writing)
        throw std::logic_error("slot " + std::to_string(slot) + " is not held by a producer");
    retire_locked(slot);
}

std::optional<TakenFrame> FrameRing::take(Deadline deadline) {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto window = static_cast<std::int64_t>(states_.size());
    for (;;) {
        std::size_t& pending = pending_[static_cast<std::size_t>(next_index_ % window)];
        if (pending != npos) {
            const TakenFrame frame{pending, next_index_};
            pending = npos;
            states_[frame.slot] = State::Reading;
            ++next_index_;
            return frame;
        }
        if (closed_)
            throw RingClosed("FrameRing is closed: frame " + std::to_string(next_index_) +
                             " will not arrive");
        if (!wait_locked(lock, frame_committed_, deadline)) {
            // A commit may have raced the timeout; look once more before giving up.
            if (pending_[static_cast<std::size_t>(next_index_ % window)] == npos && !closed_)
                return std::nullopt;
        }
    }
}

void FrameRing::release(std::size_t slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_slot(slot);
    if (states_[slot] != State::Reading)
        throw std::logic_error("slot " + std::to_string(slot) + " is not held by a consumer");
    retire_locked(slot);
}

void FrameRing::retire_locked(std::size_t slot) {
    states_[slot] = State::Retired;
    if (pins_[slot] == 0) {
        states_[slot] = State::Free;
        free_slots_.push_back(slot);
        slot_freed_.notify_one();
    }
}

void FrameRing::pin(std::size_t slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    check_slot(slot);
    if (states_[slot] == State::Free)
        throw std::logic_error("slot " + std::to_string(slot) + " is free and cannot be viewed");
    ++pins_[slot];
}

void FrameRing::unpin(std::size_t slot) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    if (slot >= pins_.size() || pins_[slot] == 0) return;
    if (--pins_[slot] == 0 && states_[slot] == State::Retired) retire_locked(slot);
}

void FrameRing::close() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
    }
    slot_freed_.notify_all();
    frame_committed_.notify_all();
}

bool FrameRing::closed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return closed_;
}

void FrameRing::reset_sequence(std::int64_t next_index) {
    if (next_index < 0) throw std::invalid_argument("frame indices start at 0 or above");
    std::lock_guard<std::mutex> lock(mutex_);
    for (State state : states_)
        if (state == State::Committed || state == State::Writing)
            throw std::logic_error("reset_sequence needs a ring with no frame in flight");
    next_index_ = next_index;
}

std::int64_t FrameRing::next_index() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_index_;
}

std::uint8_t* FrameRing::slot_data(std::size_t slot) const {
    check_slot(slot);
    return buffer_.data() + slot * stride_;
}

RingCounts FrameRing::counts() const {
    std::lock_guard<std::mutex> lock(mutex_);
    RingCounts counts;
    for (State state : states_) {
        switch (state) {
            case State::Free: ++counts.free; break;
            case State::Writing: ++counts.writing; break;
            case State::Committed: ++counts.committed; break;
            case State::Reading: ++counts.reading; break;
            case State::Retired: ++counts.retired; break;
        }
    }
    return counts;
}

}  // namespace ditto

// Python face of ditto::FrameRing: slots are handed out as WriteSlot / ReadSlot handles whose
// `.array` is a NumPy view of the slot memory (no copy). Each view pins its slot through the
// array's base capsule, so memory is never recycled under a live view, whatever the caller does
// with release(). Blocking calls drop the GIL and wait in short slices so Ctrl-C still works.
#include "bindings.hpp"

#include "frame_ring.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace py = pybind11;

namespace ditto::bindings {

namespace {

using RingPtr = std::shared_ptr<FrameRing>;

// How often a blocked wait comes back to the interpreter to look for signals.
constexpr std::chrono::milliseconds kSignalCheckInterval{50};

// Runs `attempt(deadline)` with the GIL released until it yields a value, the overall timeout
// passes (TimeoutError), or a signal handler raises (e.g. KeyboardInterrupt).
template <class Attempt>
auto wait_interruptibly(Attempt attempt, std::optional<double> timeout_s, const char* what) {
    if (timeout_s && !(*timeout_s >= 0)) throw py::value_error("timeout must be >= 0 or None");  // NaN too
    const auto start = FrameRing::Clock::now();
    const auto limit = timeout_s ? std::optional<FrameRing::Clock::time_point>(
                                       start + std::chrono::duration_cast<FrameRing::Clock::duration>(
                                                   std::chrono::duration<double>(*timeout_s)))
                                 : std::nullopt;
    for (;;) {
        auto slice = FrameRing::Clock::now() + kSignalCheckInterval;
        if (limit && *limit < slice) slice = *limit;
        decltype(attempt(slice)) result;
        {
            py::gil_scoped_release release;
            result = attempt(slice);
        }
        if (result) return *result;
        if (limit && FrameRing::Clock::now() >= *limit) {
            PyErr_SetString(PyExc_TimeoutError,
                            (std::string("FrameRing: timed out after ") +
                             std::to_string(*timeout_s) + " s waiting for " + what)
                                .c_str());
            throw py::error_already_set();
        }
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
}

// A NumPy array over one slot whose base capsule pins the slot (and keeps the ring alive).
py::array slot_view(const RingPtr& ring, std::size_t slot, bool writable) {
    ring->pin(slot);
    auto* owner = new std::pair<RingPtr, std::size_t>(ring, slot);
    py::capsule base(owner, [](void* p) {
        auto* pinned = static_cast<std::pair<RingPtr, std::size_t>*>(p);
        pinned->first->unpin(pinned->second);
        delete pinned;
    });
    const FrameShape s = ring->shape();
    const auto c = static_cast<py::ssize_t>(s.channels);
    const auto row = static_cast<py::ssize_t>(s.width * s.channels);
    py::array view(py::dtype::of<std::uint8_t>(),
                   {static_cast<py::ssize_t>(s.height), static_cast<py::ssize_t>(s.width), c},
                   {row, c, py::ssize_t{1}}, ring->slot_data(slot), base);
    if (!writable)
        py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return view;
}

// Producer handle: write into `.array`, then commit(index) or abandon().
class WriteSlot {
public:
    WriteSlot(RingPtr ring, std::size_t slot) : ring_(std::move(ring)), slot_(slot) {}
    ~WriteSlot() {
        // A dropped, uncommitted slot goes back to the pool. Only this handle moves the slot
        // out of Writing, so abandon() cannot fail here.
        if (open_) ring_->abandon(slot_);
    }
    WriteSlot(const WriteSlot&) = delete;
    WriteSlot& operator=(const WriteSlot&) = delete;

    std::size_t slot() const { return slot_; }
    bool open() const { return open_; }

    py::array array() {
        require_open("array");
        if (!array_) array_ = slot_view(ring_, slot_, /*writable=*/true);
        return *array_;
    }
    void commit(std::int64_t index) {
        require_open("commit");
        ring_->commit(slot_, index);
        close_handle();
    }
    void abandon() {
        require_open("abandon");
        ring_->abandon(slot_);
        close_handle();
    }

private:
    void require_open(const char* what) const {
        if (!open_)
            throw std::logic_error(std::string("WriteSlot.") + what + ": slot " +
                                   std::to_string(slot_) + " was already committed or abandoned");
    }
    void close_handle() {
        open_ = false;
        array_.reset();
    }

    RingPtr ring_;
    std::size_t slot_;
    bool open_ = true;
    std::optional<py::array> array_;
};

// Consumer handle for the frame `index`: read `.array`, then release().
class ReadSlot {
public:
    ReadSlot(RingPtr ring, TakenFrame frame) : ring_(std::move(ring)), frame_(frame) {}
    ~ReadSlot() {
        if (open_) ring_->release(frame_.slot);
    }
    ReadSlot(const ReadSlot&) = delete;
    ReadSlot& operator=(const ReadSlot&) = delete;

    std::size_t slot() const { return frame_.slot; }
    std::int64_t index() const { return frame_.index; }
    bool released() const { return !open_; }

    py::array array() {
        if (!open_)
            throw std::logic_error("frame " + std::to_string(frame_.index) +
                                   " was released; views taken before release stay valid, but "
                                   "no new view can be made");
        if (!array_) array_ = slot_view(ring_, frame_.slot, /*writable=*/false);
        return *array_;
    }
    void release() {
        if (!open_) return;  // idempotent: release() and the context manager may both run
        open_ = false;
        array_.reset();
        ring_->release(frame_.slot);
    }

private:
    RingPtr ring_;
    TakenFrame frame_;
    bool open_ = true;
    std::optional<py::array> array_;
};

PinPolicy pin_policy(std::optional<bool> pinned) {
    if (!pinned) return PinPolicy::Auto;
    return *pinned ? PinPolicy::Require : PinPolicy::Never;
}

}  // namespace

void bind_frame_ring(py::module_& m) {
    py::register_exception<RingClosed>(m, "RingClosed", PyExc_RuntimeError);
    m.attr("RingClosed").attr("__doc__") =
        "Raised to waiters and later callers once a FrameRing is closed.";

    py::class_<WriteSlot>(m, "WriteSlot",
                          "A slot held by a producer. Write the frame into `array`, then "
                          "commit(index); leaving a `with` block without commit abandons it.")
        .def_property_readonly("slot", &WriteSlot::slot)
        .def_property_readonly("open", &WriteSlot::open)
        .def_property_readonly("array", &WriteSlot::array,
                               "Writable HxWxC uint8 view of the slot memory (no copy).")
        .def("commit", &WriteSlot::commit, py::arg("index"),
             "Publish the slot as frame `index`. Consumers receive frames in index order.")
        .def("abandon", &WriteSlot::abandon, "Return the slot unwritten.")
        .def("__enter__", [](WriteSlot& self) -> WriteSlot& { return self; },
             py::return_value_policy::reference)
        .def("__exit__", [](WriteSlot& self, py::object exc_type, py::object, py::object) {
            if (!self.open()) return false;
            self.abandon();
            if (exc_type.is_none())
                throw std::logic_error("WriteSlot left its `with` block without commit(); the "
                                       "slot was abandoned");
            return false;
        });

    py::class_<ReadSlot>(m, "ReadSlot",
                         "A committed frame held by a consumer. Read `array`, then release(). "
                         "Arrays stay valid after release: the slot is recycled only once the "
                         "last view of it is gone.")
        .def_property_readonly("slot", &ReadSlot::slot)
        .def_property_readonly("index", &ReadSlot::index)
        .def_property_readonly("released", &ReadSlot::released)
        .def_property_readonly("array", &ReadSlot::array,
                               "Read-only HxWxC uint8 view of the slot memory (no copy).")
        .def("release", &ReadSlot::release, "Give the slot back (idempotent).")
        .def("__enter__", [](ReadSlot& self) -> ReadSlot& { return self; },
             py::return_value_policy::reference)
        .def("__exit__", [](ReadSlot& self, py::object, py::object, py::object) {
            self.release();
            return false;
        });

    py::class_<FrameRing, RingPtr>(
        m, "FrameRing",
        "N frame slots of HxWxC uint8 in one page-aligned host buffer, page-locked through CUDA "
        "when a device is usable. Producers acquire() a slot, write, and commit(index); consumers "
        "take() frames in index order and release() them. Thread-safe; waits release the GIL.")
        .def(py::init([](std::size_t slots, std::size_t height, std::size_t width,
                         std::size_t channels, std::optional<bool> pinned) {
                 return std::make_shared<FrameRing>(slots, FrameShape{height, width, channels},
                                                    pin_policy(pinned));
             }),
             py::arg("slots"), py::arg("height"), py::arg("width"), py::arg("channels") = 3,
             py::arg("pinned") = py::none(),
             "pinned: None pins when a CUDA device is usable, True requires it, False never pins.")
        .def(
            "acquire",
            [](const RingPtr& ring, std::optional<double> timeout) {
                const std::size_t slot = wait_interruptibly(
                    [&](FrameRing::Clock::time_point d) { return ring->acquire(d); }, timeout,
                    "a free slot (frames still referenced by arrays keep their slots)");
                return std::make_unique<WriteSlot>(ring, slot);
            },
            py::arg("timeout") = py::none(),
            "Block until a slot is free (timeout in seconds; TimeoutError when it passes).")
        .def(
            "take",
            [](const RingPtr& ring, std::optional<double> timeout) {
                const TakenFrame frame = wait_interruptibly(
                    [&](FrameRing::Clock::time_point d) { return ring->take(d); }, timeout,
                    "the next frame");
                return std::make_unique<ReadSlot>(ring, frame);
            },
            py::arg("timeout") = py::none(),
            "Block until the next frame in index order is committed. After close(), frames "
            "already committed in order are still handed out, then RingClosed is raised.")
        .def("close", &FrameRing::close, "Wake every waiter with RingClosed.")
        .def("reset_sequence", &FrameRing::reset_sequence, py::arg("next_index"),
             "Set the index the consumer expects next (no frame may be in flight).")
        .def_property_readonly("closed", &FrameRing::closed)
        .def_property_readonly("next_index", &FrameRing::next_index)
        .def_property_readonly("slots", &FrameRing::slot_count)
        .def_property_readonly("shape",
                               [](const FrameRing& r) {
                                   const FrameShape s = r.shape();
                                   return py::make_tuple(s.height, s.width, s.channels);
                               })
        .def_property_readonly("slot_stride", &FrameRing::slot_stride,
                               "Bytes between slots: the frame size rounded up to a page.")
        .def_property_readonly("memory_kind",
                               [](const FrameRing& r) { return to_string(r.memory_kind()); },
                               "'cuda_pinned' (page-locked by cudaHostAlloc) or 'aligned'.")
        .def_property_readonly(
            "pinned", [](const FrameRing& r) { return r.memory_kind() == MemoryKind::CudaPinned; })
        .def("counts", [](const FrameRing& r) {
            const RingCounts c = r.counts();
            py::dict d;
            d["free"] = c.free;
            d["writing"] = c.writing;
            d["committed"] = c.committed;
            d["reading"] = c.reading;
            d["retired"] = c.retired;
            return d;
        }, "Slots per state; 'retired' are given back but still pinned by live array views.");
}

}  // namespace ditto::bindings

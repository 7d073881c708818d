// Python face of ditto::paste_back. Inputs are checked strictly (dtype, shape, C order) rather
// than converted, so a hot-path caller never pays for a silent copy; the kernel runs without
// the GIL.
#include "bindings.hpp"

#include "paste_back.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;

namespace ditto::bindings {

namespace {

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string describe(const py::array& a) {
    return shape_of(a) + " " + py::str(a.dtype()).cast<std::string>() +
           (a.flags() & py::array::c_style ? "" : " (not C-contiguous)");
}

// Raises unless `a` is a C-contiguous array of T whose shape is `shape` (-1: any extent).
template <class T>
void require(const py::array& a, const char* name, const std::vector<py::ssize_t>& shape,
             const char* expected) {
    bool ok = a.dtype().is(py::dtype::of<T>()) && (a.flags() & py::array::c_style) &&
              a.ndim() == static_cast<py::ssize_t>(shape.size());
    for (std::size_t i = 0; ok && i < shape.size(); ++i)
        ok = (shape[i] < 0 ? a.shape(i) > 0 : a.shape(i) == shape[i]) && a.shape(i) <= INT_MAX;
    if (!ok)
        throw py::value_error(std::string("paste_back: ") + name + " must be a C-contiguous " +
                              expected + ", got " + describe(a));
}

bool overlaps(const py::array& a, const py::array& b) {
    const auto* a0 = static_cast<const char*>(a.data());
    const auto* b0 = static_cast<const char*>(b.data());
    return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

Affine2x3 crop_to_frame_matrix(const py::array& m_c2o) {
    const auto m = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(m_c2o);
    if (!m || m.ndim() != 2 || (m.shape(0) != 2 && m.shape(0) != 3) || m.shape(1) != 3)
        throw py::value_error("paste_back: m_c2o must be a (2, 3) or (3, 3) matrix, got " +
                              describe(m_c2o));
    Affine2x3 affine;
    for (int i = 0; i < 6; ++i) {
        affine[i] = m.at(i / 3, i % 3);
        if (!std::isfinite(affine[i]))
            throw py::value_error("paste_back: m_c2o must be finite, got " +
                                  py::repr(m_c2o).cast<std::string>());
    }
    return affine;
}

py::array paste_back_py(const py::array& frame, const py::array& render, const py::array& mask,
                        const py::array& m_c2o, std::optional<py::array> out, int threads) {
    require<std::uint8_t>(frame, "frame", {-1, -1, 3}, "(H, W, 3) uint8 array");
    require<float>(mask, "mask", {-1, -1}, "non-empty (S, S') float32 array");
    // 4-D: the decoder's (1, 3, S, S') output in [0, 1]; 3-D: the converted (S, S', 3) render.
    const bool channel_first = render.ndim() == 4;
    const std::string size = std::to_string(mask.shape(0)) + ", " + std::to_string(mask.shape(1));
    if (channel_first)
        require<float>(render, "render", {1, 3, mask.shape(0), mask.shape(1)},
                       ("(1, 3, " + size + ") float32 array (the mask's size)").c_str());
    else
        require<float>(render, "render", {mask.shape(0), mask.shape(1), 3},
                       ("(" + size + ", 3) float32 array (the mask's size)").c_str());
    const Affine2x3 affine = crop_to_frame_matrix(m_c2o);
    if (threads < 0)
        throw py::value_error("paste_back: threads must be >= 0 (0: one per core), got " +
                              std::to_string(threads));
    const auto height = static_cast<int>(frame.shape(0)), width = static_cast<int>(frame.shape(1));
    if (!out) out = py::array_t<std::uint8_t>({frame.shape(0), frame.shape(1), py::ssize_t{3}});
    require<std::uint8_t>(*out, "out", {frame.shape(0), frame.shape(1), 3},
                          "uint8 array of the frame's shape");
    if (!out->writeable()) throw py::value_error("paste_back: out is read-only");
    if (overlaps(*out, render) || overlaps(*out, mask) ||
        (overlaps(*out, frame) && out->data() != frame.data()))
        throw py::value_error(
            "paste_back: out must be the frame itself or memory shared with no input");

    const PasteSource source{static_cast<const float*>(render.data()),
                             static_cast<const float*>(mask.data()),
                             static_cast<int>(mask.shape(0)), static_cast<int>(mask.shape(1)),
                             channel_first ? RenderLayout::kChwUnit : RenderLayout::kHwc255};
    const auto* frame_data = static_cast<const std::uint8_t*>(frame.data());
    auto* out_data = static_cast<std::uint8_t*>(out->mutable_data());
    {
        py::gil_scoped_release release;
        paste_back(frame_data, out_data, height, width, source, affine, static_cast<unsigned>(threads));
    }
    return *out;
}

}  // namespace

void bind_paste_back(py::module_& m) {
    m.def("paste_back", &paste_back_py, py::arg("frame"), py::arg("render"), py::arg("mask"),
          py::arg("m_c2o"), py::arg("out") = py::none(), py::arg("threads") = 0,
          R"doc(Paste a rendered face back into its frame (DITTO_SPEC §5.14), bit-exact to the reference.

out = uint8(clip(mask_w * face_w + (1 - mask_w) * frame, 0, 255)) with mask_w and face_w the
OpenCV 4.x bilinear warps (black border) of `mask` (clipped to [0, 1]) and `render` through
`m_c2o`; only the frame window the crop lands on is computed.

frame: (H, W, 3) uint8; render: (S, S', 3) float32 in [0, 255], or the decoder's output
(1, 3, S, S') float32 in [0, 1], converted inside the kernel (on its threads) as
clip(render, 0, 1) * 255, the reference's conversion, with the same bytes; mask: (S, S') float32;
m_c2o: (2, 3) or (3, 3) crop->frame matrix. All C-contiguous; the binding copies none of them.
out: None (a new array), `frame` itself (in place), or a (H, W, 3) uint8 buffer sharing no
memory with the inputs. threads: rows are shared among this many threads, 0 (or more than the
cores this process may use): one per such core; the calling thread works too, with workers of a
pool that all calls share and that starts them once. Safe to call from several threads at once.
Returns `out`.)doc");
}

}  // namespace ditto::bindings

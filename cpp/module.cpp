#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "ditto_fast native core: frame ring buffers, CPU kernels and CUDA helpers.";
    ditto::bindings::bind_build_info(m);
    ditto::bindings::bind_frame_ring(m);
    ditto::bindings::bind_paste_back(m);
}

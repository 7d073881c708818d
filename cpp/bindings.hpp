// Each exposed concept binds itself into the module in its own file.
#pragma once

#include <pybind11/pybind11.h>

namespace ditto::bindings {

void bind_build_info(pybind11::module_& m);
void bind_frame_ring(pybind11::module_& m);
void bind_paste_back(pybind11::module_& m);

}  // namespace ditto::bindings

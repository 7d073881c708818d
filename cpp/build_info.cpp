// What this build contains and which GPUs it can see; never raises on a machine without CUDA.
#include "bindings.hpp"

#include "cuda_runtime.hpp"

#include <pybind11/stl.h>

namespace py = pybind11;

namespace ditto::bindings {

void bind_build_info(py::module_& m) {
    m.attr("__version__") = DITTO_FAST_VERSION;
    m.attr("cuda_compiled") = cuda::compiled();
    m.attr("cuda_architectures") = DITTO_FAST_CUDA_ARCHITECTURES;
    m.def("cuda_runtime_version", &cuda::runtime_version,
          "CUDA runtime version linked into this build (e.g. 13000), 0 without CUDA.");
    m.def(
        "cuda_devices",
        [] {
            const cuda::DeviceQuery query = cuda::query_devices();
            py::list devices;
            for (const cuda::DeviceInfo& d : query.devices) {
                py::dict info;
                info["ordinal"] = d.ordinal;
                info["name"] = d.name;
                info["compute_capability"] = py::make_tuple(d.compute_major, d.compute_minor);
                info["total_memory"] = d.total_memory;
                devices.append(info);
            }
            return py::make_tuple(devices, query.reason);
        },
        "(devices, reason): the visible CUDA devices as dicts, and why there are none when "
        "the list is empty.");
}

}  // namespace ditto::bindings

"""The warp network's `GridSample3D` node as a TensorRT plugin run by our Triton kernel.

TensorRT 10 has no 5-D grid sample (its GridSample layer takes 4-D input only; 5-D arrived
in TensorRT 11.2.1), so the warp engine keeps the reference's custom node and TensorRT runs
it through a quickly deployable Python plugin (`tensorrt.plugin`, TensorRT >= 10.6): the
ONNX parser maps a node to the plugin whose name is the node's op type and whose namespace
is the node's `plugin_namespace` attribute (`onnx_prep` adds it).

The implementation is a just-in-time one: TensorRT calls back into Python on every run, so
the process that runs a warp engine must register the plugin before deserialising it (the
tensorrt backend does). Only trilinear sampling with zero padding and align_corners=0, the
warp network's only use, is implemented; `onnx_prep` rejects other attributes at build time.

No `from __future__ import annotations` here: `tensorrt.plugin.register` reads the type
hints of the function it decorates, so they must be real objects, not strings.
"""

PLUGIN_NAMESPACE = "ditto_fast"
PLUGIN_NAME = "GridSample3D"  # the op type of the reference's warp_network.onnx nodes
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
KERNEL_MODULE = "ditto_fast.kernels.grid_sample_3d"

# The tensorrt.plugin module the plugin was registered with: once per TensorRT in the process.
_registered_with: object | None = None


def torch_view(tensor):
    """A zero-copy torch view of a TensorRT plugin tensor (it exposes the CUDA array interface)."""
    import torch

    return torch.as_tensor(tensor, device="cuda")


def on_trt_stream(stream: int):
    """Run the enclosed torch work on TensorRT's stream, so it is ordered with the engine."""
    import torch

    return torch.cuda.stream(torch.cuda.ExternalStream(stream))


def _import_kernel():
    try:
        from ditto_fast.kernels.grid_sample_3d import grid_sample_3d
    except ImportError as exc:
        raise ImportError(
            f"the {PLUGIN_NAME} plugin runs {KERNEL_MODULE}.grid_sample_3d, which cannot be imported ({exc}); "
            "it needs torch with CUDA and triton"
        ) from exc
    return grid_sample_3d


def register_grid_sample_plugin() -> None:
    """Register `ditto_fast::GridSample3D` with TensorRT's plugin registry (once per process and
    TensorRT module: a stand-in TensorRT, as in the tests, gets its own registration)."""
    global _registered_with
    try:
        import tensorrt.plugin as trtp
    except ImportError as exc:
        raise ImportError(
            f"the {PLUGIN_NAME} plugin needs TensorRT's Python plugin module tensorrt.plugin "
            f"(TensorRT 10.6 or newer): {exc}"
        ) from exc
    if _registered_with is trtp:
        return
    grid_sample_3d = _import_kernel()

    @trtp.register(PLUGIN_ID)
    def describe(
        input: trtp.TensorDesc, grid: trtp.TensorDesc,
        interpolation_mode: int, padding_mode: int, align_corners: int,
    ) -> trtp.TensorDesc:
        # (N, C, D, H, W) sampled at (N, Do, Ho, Wo, 3) points gives (N, C, Do, Ho, Wo).
        n, c = input.shape_expr[0], input.shape_expr[1]
        depth, height, width = grid.shape_expr[1], grid.shape_expr[2], grid.shape_expr[3]
        return trtp.from_shape_expr((n, c, depth, height, width), dtype=input.dtype)

    # The attributes are left out of the implementation on purpose: only their defaults are
    # implemented (checked when the ONNX is prepared), and attributes named here would be
    # serialised into every engine.
    @trtp.impl(PLUGIN_ID)
    def run(input, grid, outputs, stream) -> None:
        with on_trt_stream(stream):
            torch_view(outputs[0]).copy_(grid_sample_3d(torch_view(input), torch_view(grid)))

    _registered_with = trtp

"""TensorRT engines from a checkpoint's ONNX files (`ditto-fast build-engines`).

- `plan`: per network, the precision, the layers kept in fp32, the shape profiles and the
  engine's file name (the reference's rules).
- `onnx_prep`: the ONNX graph each build parses (the warp network's grid-sample form, a
  dynamic batch, named fp32 nodes).
- the warp network's GridSample3D as a TensorRT Python plugin running our Triton kernel lives
  in `ditto_fast.backends.tensorrt_plugin`: the tensorrt backend needs it to load a warp engine.
- `tensorrt_build`: the TensorRT API calls.
- `run`: the whole build: checks, order, progress lines, files.
"""

from ditto_fast.tools.engines.plan import BuildPlan, ShapeProfile, plan_for
from ditto_fast.tools.engines.run import BuildOptions, BuiltEngine, build_engines
from ditto_fast.tools.engines.tensorrt_build import EngineBuildError

__all__ = ["BuildOptions", "BuildPlan", "BuiltEngine", "EngineBuildError", "ShapeProfile", "build_engines",
           "plan_for"]

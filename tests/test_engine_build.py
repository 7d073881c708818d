"""TensorRT engine building (`ditto-fast build-engines`) without TensorRT.

TensorRT cannot be installed here, so a stand-in `tensorrt` module records what the build
asks of it: network typing, builder flags, profiles, layer precisions, the timing cache and
plugin registration. Its ONNX "parser" reads the real files, makes one layer per node (named
after the node, as TensorRT's parser does, plus a `_1` helper layer for grid samples) and,
like TensorRT, fails on a custom op unless a plugin of that name and namespace is registered.
Whether TensorRT itself accepts these calls is not tested here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ditto_fast.backends import tensorrt_plugin as plugin_module
from ditto_fast.backends.onnx_gridsample import GridSampleRewriteError
from ditto_fast.backends.tensorrt_plugin import KERNEL_MODULE, PLUGIN_ID, register_grid_sample_plugin
from ditto_fast.checkpoints import file_stem, find_tree
from ditto_fast.cli import main
from ditto_fast.contract import MODELS
from ditto_fast.tools.engines import BuildOptions, EngineBuildError, build_engines, plan_for
from ditto_fast.tools.engines.onnx_prep import find_onnx, grid_sample_form, prepare_onnx
from ditto_fast.tools.engines.plan import GRID_SAMPLE_OPS

TINY = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"
ONNX_DIR = TINY / "ditto_onnx"
STRONGLY_TYPED = 5  # the stand-in's NetworkDefinitionCreationFlag.STRONGLY_TYPED


# --- the stand-in TensorRT ---------------------------------------------------------------

class Layer:
    def __init__(self, name: str, layer_type: str) -> None:
        self.name, self.type = name, layer_type
        self.precision = None
        self.output_types: dict[int, str] = {}
        self.num_outputs = 1

    def set_output_type(self, index: int, dtype: str) -> None:
        self.output_types[index] = dtype


class Network:
    def __init__(self, flags: int) -> None:
        self.flags, self.layers, self.inputs, self.source = flags, [], [], None

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))

    def get_layer(self, index):
        return self.layers[index]

    def get_input(self, index):
        return self.inputs[index]


class Config:
    def __init__(self, trt) -> None:
        self.trt = trt
        self.flags, self.cleared, self.pools, self.profiles = set(), set(), {}, []
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = "NONE"
        self.timing_cache = None

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.cleared.add(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile.shapes)

    def create_timing_cache(self, blob):
        self.trt.cache_loads.append(bytes(blob))
        return TimingCache(bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return cache.blob != b"made on another GPU"


class TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return self.blob


class Profile:
    def __init__(self) -> None:
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


def fake_tensorrt(version: str = "10.99.0", weak_typing: bool = True, build_fails: bool = False,
                  layer_prefix: str = "") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32 = "float32"
    trt.builds, trt.cache_loads, trt.plugins = [], [], {}
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.init_libnvinfer_plugins = lambda logger, namespace: True
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=STRONGLY_TYPED)
    flags = ("TF32", "FP16", "OBEY_PRECISION_CONSTRAINTS") if weak_typing else ("TF32",)
    trt.BuilderFlag = types.SimpleNamespace(**{flag: flag for flag in flags})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(NONE="NONE", AMPERE_PLUS="AMPERE_PLUS")
    layer_types = ("PLUGIN_V3", "GRID_SAMPLE", "SHUFFLE", "CONSTANT", "OTHER")
    trt.LayerType = types.SimpleNamespace(**{name: name for name in layer_types})
    node_layer_types = {"GridSample3D": "PLUGIN_V3", "GridSample": "GRID_SAMPLE", "Reshape": "SHUFFLE"}

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse_from_file(self, path):
            model = onnx.load(path)
            self.network.source = Path(path)
            weights = {init.name for init in model.graph.initializer}
            self.network.inputs = [types.SimpleNamespace(name=v.name) for v in model.graph.input
                                   if v.name not in weights]
            for node in model.graph.node:
                if not onnx.defs.has(node.op_type):
                    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                    plugin_id = f"{attrs.get('plugin_namespace', b'').decode()}::{node.op_type}"
                    if plugin_id not in trt.plugins:
                        self.errors.append(f"no importer or plugin for op {node.op_type} ({plugin_id})")
                        return False
                name = layer_prefix + node.name
                self.network.layers.append(Layer(name, node_layer_types.get(node.op_type, "OTHER")))
                if node.op_type in ("GridSample3D", "GridSample"):
                    self.network.layers.append(Layer(f"{name}_1", "SHUFFLE"))
            return True

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, index):
            return types.SimpleNamespace(desc=lambda: self.errors[index])

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config(trt)

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.builds.append({
                "onnx": network.source,
                "strongly_typed": bool(network.flags & (1 << STRONGLY_TYPED)),
                "flags": config.flags, "cleared": config.cleared, "pools": config.pools,
                "opt_level": config.builder_optimization_level,
                "hardware": config.hardware_compatibility_level, "profiles": config.profiles,
                "pinned": {layer.name: (layer.precision, layer.output_types)
                           for layer in network.layers if layer.precision is not None},
                "layers": [layer.name for layer in network.layers],
            })
            if build_fails:
                return None
            config.timing_cache.blob += f"|{network.source.name}".encode()  # tactics timed
            return f"engine of {network.source.name}".encode()

    trt.OnnxParser, trt.Builder = OnnxParser, Builder
    trt.plugin = fake_plugin_module(trt)
    return trt


def fake_plugin_module(trt) -> types.ModuleType:
    """`tensorrt.plugin`: registration by decorator, recorded in `trt.plugins`."""
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.TensorDesc = type("TensorDesc", (), {})
    trtp.from_shape_expr = lambda shape, dtype: types.SimpleNamespace(shape=tuple(shape), dtype=dtype)

    def register(plugin_id):
        def decorate(function):
            if plugin_id in trt.plugins:
                raise ValueError(f"{plugin_id} is already registered")
            trt.plugins[plugin_id] = {"describe": function}
            return function
        return decorate

    def impl(plugin_id):
        def decorate(function):
            trt.plugins[plugin_id]["impl"] = function
            return function
        return decorate

    trtp.register, trtp.impl = register, impl
    return trtp


@pytest.fixture
def kernel_calls(monkeypatch):
    """A stand-in for the Triton kernel module: torch's grid_sample, recording its calls
    (torch is imported only when the kernel runs: building needs neither)."""
    calls = []

    def grid_sample_3d(input, grid):
        import torch

        calls.append((tuple(input.shape), tuple(grid.shape)))
        return torch.nn.functional.grid_sample(input, grid, mode="bilinear", padding_mode="zeros",
                                               align_corners=False)

    monkeypatch.setitem(sys.modules, KERNEL_MODULE, types.SimpleNamespace(grid_sample_3d=grid_sample_3d))
    return calls


@pytest.fixture
def install(monkeypatch, kernel_calls):
    """Install a stand-in TensorRT (arguments as fake_tensorrt) for the rest of the test."""
    def install_trt(**kwargs):
        trt = fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setitem(sys.modules, "tensorrt.plugin", trt.plugin)
        return trt
    return install_trt


def builds_by_network(trt) -> dict[str, dict]:
    networks = {f"{file_stem(name)}.onnx": name for name in MODELS}
    return {networks[build["onnx"].name]: build for build in trt.builds}


# --- plans ---------------------------------------------------------------------------------

def test_plans_follow_the_reference_precisions_and_config_names():
    config = find_tree(TINY).load_config("offline")
    for name in MODELS:
        plan = plan_for(name)
        expected = "fp32" if name in ("motion_extractor", "hubert", "lmdm") else "fp16"
        assert plan.precision == expected, name
        # The tensorrt backend finds an engine by the file name its config gives.
        assert plan.engine_name == Path(config.model_path(name)).name
        assert plan.fp32_ops == (GRID_SAMPLE_OPS if name == "warp_network" else ())
    (hubert,) = plan_for("hubert").profiles
    assert (hubert.input, hubert.min, hubert.opt, hubert.max) == ("input_values", (1, 3240), (1, 6480), (1, 12960))
    assert all(not plan_for(name).profiles for name in MODELS if name != "hubert")


def test_fp32_only_and_batch_plans():
    warp = plan_for("warp_network", fp32_only=True)
    assert (warp.precision, warp.fp32_ops, warp.engine_name) == ("fp32", (), "warp_network_fp16.engine")
    decoder = plan_for("decoder", batch=8)
    (feature,) = decoder.profiles
    assert (feature.min, feature.opt, feature.max) == ((1, 256, 64, 64), (8, 256, 64, 64), (8, 256, 64, 64))
    assert [p.input for p in plan_for("warp_network", batch=4).profiles] == ["feature_3d", "kp_source", "kp_driving"]
    assert plan_for("stitch_network", batch=8).max_batch == 1  # only the render networks batch
    assert "batch 1..8" in decoder.describe()
    with pytest.raises(ValueError, match="no network 'unet'"):
        plan_for("unet")
    with pytest.raises(ValueError, match="at least 1"):
        plan_for("decoder", batch=0)


def test_grid_sample_form_follows_tensorrt_support():
    assert grid_sample_form("10.13.3.9") == "plugin"  # TensorRT 10: 4-D GridSample only
    assert grid_sample_form("11.2.1") == "native"
    assert grid_sample_form("11.4.0.post1", "plugin") == "plugin"
    with pytest.raises(ValueError, match="TensorRT 10.7.0 has no 5-D GridSample"):
        grid_sample_form("10.7.0", "native")
    with pytest.raises(ValueError, match="must be one of"):
        grid_sample_form("10.7.0", "cuda")


# --- ONNX preparation ----------------------------------------------------------------------

def grid_nodes(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type in GRID_SAMPLE_OPS]


def test_plugin_form_addresses_our_plugin(tmp_path):
    only_native = tmp_path / "onnx"
    only_native.mkdir()
    shutil.copy(ONNX_DIR / "warp_network_ori.onnx", only_native)
    source = find_onnx(only_native, "warp_network", "plugin")
    assert source.name == "warp_network_ori.onnx"  # the other form, rewritten
    prepared = prepare_onnx(plan_for("warp_network"), source, "plugin", tmp_path)
    nodes = grid_nodes(prepared.path)
    assert nodes and all(n.op_type == "GridSample3D" for n in nodes)
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {"interpolation_mode": 0, "padding_mode": 0, "align_corners": 0, "plugin_namespace": b"ditto_fast"}
    assert prepared.fp32_layers == tuple(n.name for n in nodes)


def test_native_form_and_node_names(tmp_path):
    model = onnx.load(str(ONNX_DIR / "warp_network.onnx"))
    for node in model.graph.node:
        if node.op_type == "GridSample3D":
            node.name = ""  # the parser would name its layer after nothing
    source = tmp_path / "warp_network.onnx"
    onnx.save(model, str(source))
    prepared = prepare_onnx(plan_for("warp_network"), source, "native", tmp_path)
    nodes = grid_nodes(prepared.path)
    assert nodes and all(n.op_type == "GridSample" and n.name for n in nodes)
    assert prepared.fp32_layers == tuple(n.name for n in nodes)
    # An fp32 plan needs no pinned layers, other networks no rewrite at all.
    assert prepare_onnx(plan_for("warp_network", fp32_only=True), source, "native", tmp_path).fp32_layers == ()
    decoder = ONNX_DIR / "decoder.onnx"
    assert prepare_onnx(plan_for("decoder"), decoder, "plugin", tmp_path).path == decoder


def test_plugin_rejects_attributes_it_does_not_implement(tmp_path):
    model = onnx.load(str(ONNX_DIR / "warp_network.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "GridSample3D")
    next(a for a in node.attribute if a.name == "padding_mode").i = 1
    source = tmp_path / "warp_network.onnx"
    onnx.save(model, str(source))
    with pytest.raises(GridSampleRewriteError, match=f"node '{node.name}' has interpolation_mode=0, padding_mode=1"):
        prepare_onnx(plan_for("warp_network"), source, "plugin", tmp_path)


def test_batch_profile_makes_the_batch_dynamic_where_the_graph_allows(tmp_path):
    prepared = prepare_onnx(plan_for("decoder", batch=2), ONNX_DIR / "decoder.onnx", "plugin", tmp_path)
    rng = np.random.default_rng(0)
    feature = rng.normal(0, 0.3, (2, 256, 64, 64)).astype(np.float32)
    batched = ort.InferenceSession(str(prepared.path)).run(None, {"feature": feature})[0]
    single = ort.InferenceSession(str(ONNX_DIR / "decoder.onnx"))
    for item in range(2):
        expected = single.run(None, {"feature": feature[item:item + 1]})[0]
        np.testing.assert_allclose(batched[item:item + 1], expected, rtol=1e-5, atol=1e-6)
    # The synthetic warp network reshapes to constant batch-1 shapes: a profile could not work.
    with pytest.raises(ValueError, match=r"fixes the batch size of \['out'\] at 1"):
        prepare_onnx(plan_for("warp_network", batch=2), ONNX_DIR / "warp_network.onnx", "plugin", tmp_path)


# --- builds --------------------------------------------------------------------------------

def test_full_build_with_reference_settings(install, tmp_path):
    trt = install()
    lines = []
    out = tmp_path / "ditto_trt_custom"
    built = build_engines(ONNX_DIR, out, progress=lines.append)
    assert sorted(p.name for p in out.iterdir()) == sorted(plan_for(n).engine_name for n in MODELS)
    assert [b.plan.network for b in built] == list(MODELS)
    for engine in built:  # what the builder returned, under the config's name
        assert engine.path.read_bytes().startswith(b"engine of ")
    builds = builds_by_network(trt)
    for name, build in builds.items():
        fp16 = plan_for(name).precision == "fp16"
        assert build["strongly_typed"] is not fp16, name
        assert build["flags"] == ({"FP16", "OBEY_PRECISION_CONSTRAINTS"} if fp16 else set()), name
        assert build["cleared"] == {"TF32"}
        assert (build["opt_level"], build["hardware"], build["pools"]) == (5, "NONE", {})
    assert builds["hubert"]["profiles"] == [{"input_values": ((1, 3240), (1, 6480), (1, 12960))}]
    # The warp network: parsed with the plugin registered, its grid-sample layers (not their
    # helper shuffles, nor anything else) pinned to fp32.
    warp = builds["warp_network"]
    node_names = [n.name for n in grid_nodes(ONNX_DIR / "warp_network.onnx")]
    assert warp["pinned"] == {name: ("float32", {0: "float32"}) for name in node_names}
    assert all(f"{name}_1" in warp["layers"] for name in node_names)
    assert set(trt.plugins) == {PLUGIN_ID}
    assert all(not build["pinned"] for name, build in builds.items() if name != "warp_network")
    assert len(lines) == 2 * len(MODELS)
    assert lines[0] == "[1/12] appearance_extractor: building (fp16) ..."
    assert lines[5].startswith("[3/12] warp_network: warp_network_fp16.engine (fp16, GridSample/GridSample3D in fp32)")


def test_builder_options_reach_the_config(install, tmp_path):
    trt = install()
    options = BuildOptions(fp32_only=True, hardware_compatible=True, opt_level=2, workspace_gib=1.5,
                           only=("decoder", "warp_network"), batch=3)
    with pytest.raises(ValueError, match="fixes the batch size"):  # the synthetic warp graph
        build_engines(ONNX_DIR, tmp_path, options)
    assert not trt.builds  # found before any build started
    trt = install()
    build_engines(ONNX_DIR, tmp_path, dataclasses.replace(options, only=("decoder",)))
    (decoder,) = trt.builds
    assert decoder["strongly_typed"] and not decoder["flags"]  # --fp32-only
    assert (decoder["opt_level"], decoder["hardware"]) == (2, "AMPERE_PLUS")
    assert decoder["pools"] == {"WORKSPACE": int(1.5 * 2**30)}
    assert decoder["profiles"] == [{"feature": ((1, 256, 64, 64), (3, 256, 64, 64), (3, 256, 64, 64))}]
    assert (tmp_path / "decoder_fp16.engine").is_file()  # the name the runtime looks for
    assert not trt.plugins  # no warp network, no plugin


def test_timing_cache_round_trip(install, tmp_path):
    cache = tmp_path / "cache" / "timing.cache"
    trt = install()
    build_engines(ONNX_DIR, tmp_path / "a", BuildOptions(only=("stitch_network",), timing_cache=cache))
    assert trt.cache_loads == [b""]  # no file yet: a new cache
    assert cache.read_bytes() == b"|stitch_network.onnx"
    trt = install()
    build_engines(ONNX_DIR, tmp_path / "b", BuildOptions(only=("decoder", "landmark106"), timing_cache=cache))
    assert trt.cache_loads == [b"|stitch_network.onnx"]  # loaded once, shared by both builds
    assert cache.read_bytes() == b"|stitch_network.onnx|decoder.onnx|landmark106.onnx"
    # A cache from another GPU is not used, and is replaced.
    cache.write_bytes(b"made on another GPU")
    lines = []
    trt = install()
    build_engines(ONNX_DIR, tmp_path / "c", BuildOptions(only=("decoder",), timing_cache=cache), lines.append)
    assert any("another TensorRT or GPU" in line for line in lines)
    assert cache.read_bytes() == b"|decoder.onnx"


def test_tensorrt_11_builds_fp32_with_the_native_grid_sample(install, tmp_path):
    trt = install(version="11.3.0", weak_typing=False)
    with pytest.raises(EngineBuildError, match="TensorRT 11.3.0 has no fp16 builder flag.*--fp32-only"):
        build_engines(ONNX_DIR, tmp_path, BuildOptions(only=("decoder",)))
    build_engines(ONNX_DIR, tmp_path, BuildOptions(only=("warp_network",), fp32_only=True))
    (warp,) = trt.builds
    native_nodes = [n.name for n in grid_nodes(ONNX_DIR / "warp_network_ori.onnx")]
    assert native_nodes and all(name in warp["layers"] for name in native_nodes)
    assert warp["strongly_typed"] and not warp["pinned"]
    assert not trt.plugins  # TensorRT's own GridSample, no plugin


def test_failures_are_one_clear_error_and_leave_no_file(install, tmp_path):
    install(build_fails=True)
    with pytest.raises(EngineBuildError, match="could not build the decoder engine"):
        build_engines(ONNX_DIR, tmp_path, BuildOptions(only=("decoder",)))
    assert not list(tmp_path.iterdir())  # no engine, no partial file, no scratch folder
    # Layers the parser named otherwise than the nodes: the fp32 pins would silently miss.
    install(layer_prefix="parsed/")
    with pytest.raises(EngineBuildError, match="no TensorRT layer came from the ONNX nodes"):
        build_engines(ONNX_DIR, tmp_path, BuildOptions(only=("warp_network",)))


def write_model(path: Path, op_type: str, input_name: str = "x") -> None:
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node(op_type, [input_name], ["y"], name="n0")], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))


def test_parse_errors_and_missing_profile_inputs(install, tmp_path):
    install()
    onnx_dir = tmp_path / "ditto_onnx"
    onnx_dir.mkdir()
    write_model(onnx_dir / "stitch_network.onnx", "Mystery")
    write_model(onnx_dir / "hubert.onnx", "Identity", input_name="audio")
    with pytest.raises(EngineBuildError, match=r"stitch_network.onnx: TensorRT cannot parse stitch_network: "
                                               r"no importer or plugin for op Mystery"):
        build_engines(tmp_path, tmp_path / "out", BuildOptions(only=("stitch_network",)))  # a tree root works
    with pytest.raises(EngineBuildError, match=r"hubert has no input 'input_values' to give a shape profile"):
        build_engines(onnx_dir, tmp_path / "out", BuildOptions(only=("hubert",)))


# --- the GridSample3D plugin ---------------------------------------------------------------

def test_plugin_registration_shape_and_run(install, kernel_calls, monkeypatch):
    torch = pytest.importorskip("torch")
    trt = install()
    register_grid_sample_plugin()
    register_grid_sample_plugin()  # once per process: a second registration would raise
    plugin = trt.plugins[PLUGIN_ID]
    volume_desc = types.SimpleNamespace(shape_expr=[1, 32, 16, 64, 64], dtype="float32")
    grid_desc = types.SimpleNamespace(shape_expr=[1, 16, 8, 4, 3], dtype="float32")
    out = plugin["describe"](volume_desc, grid_desc, 0, 0, 0)
    assert (out.shape, out.dtype) == ((1, 32, 16, 8, 4), "float32")
    # Run on CPU tensors: the CUDA glue (stream, zero-copy views) is swapped for plain torch.
    monkeypatch.setattr(plugin_module, "torch_view", lambda tensor: tensor)
    monkeypatch.setattr(plugin_module, "on_trt_stream", lambda stream: contextlib.nullcontext())
    generator = torch.Generator().manual_seed(0)
    volume = torch.randn(1, 3, 4, 5, 6, generator=generator)
    grid = torch.rand(1, 2, 3, 4, 3, generator=generator) * 2.2 - 1.1
    result = torch.full((1, 3, 2, 3, 4), float("nan"))
    plugin["impl"](volume, grid, (result,), 0)
    assert kernel_calls == [((1, 3, 4, 5, 6), (1, 2, 3, 4, 3))]
    expected = torch.nn.functional.grid_sample(volume, grid, align_corners=False)
    torch.testing.assert_close(result, expected)


def test_plugin_needs_tensorrt_plugin_module_and_kernel(install, monkeypatch):
    install()
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)
    with pytest.raises(ImportError, match=r"needs TensorRT's Python plugin module tensorrt.plugin"):
        register_grid_sample_plugin()
    install()
    monkeypatch.setitem(sys.modules, KERNEL_MODULE, None)
    with pytest.raises(ImportError, match=r"runs ditto_fast.kernels.grid_sample_3d.grid_sample_3d, which cannot"):
        register_grid_sample_plugin()


def test_runtime_registers_the_plugin_before_loading_a_warp_engine(monkeypatch, kernel_calls, tmp_path):
    from test_backend_tensorrt import fake_tensorrt as fake_runtime
    from test_backend_tensorrt import load_backend

    spec = MODELS["warp_network"]
    tensors = [(t.name, "in", t.shape, "float32") for t in spec.inputs]
    tensors += [(t.name, "out", t.shape, "float32") for t in spec.outputs]
    runtime = fake_runtime({b"warp": tensors})
    registered = {}
    runtime.plugin = fake_plugin_module(types.SimpleNamespace(plugins=registered))
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", runtime.plugin)
    backend = load_backend(monkeypatch, runtime)
    engine = tmp_path / "warp_network_fp16.engine"
    engine.write_bytes(b"warp")
    backend.TensorRTNetwork("warp_network", engine)
    assert set(registered) == {PLUGIN_ID}
    # Without the plugin module, an engine that fails to load says why the plugin is missing.
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)
    engine.write_bytes(b"needs the plugin")
    with pytest.raises(ValueError, match="build-engines\\); its GridSample3D plugin could not be registered"):
        backend.TensorRTNetwork("warp_network", engine)


# --- the command line ----------------------------------------------------------------------

def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["build-engines", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_builds_with_progress_lines(install, tmp_path, capsys):
    trt = install()
    cache = tmp_path / "timing.cache"
    code, out, err = run_cli(capsys, "--onnx", str(TINY), "--out", str(tmp_path / "engines"),
                             "--only", "stitch_network", "lmdm", "--opt-level", "3", "--workspace", "2",
                             "--hardware-compatible", "--timing-cache", str(cache))
    assert code == 0, err
    assert out.splitlines()[1].startswith("[1/2] stitch_network: stitch_network_fp16.engine (fp16), ")
    assert out.splitlines()[3].startswith("[2/2] lmdm: lmdm_v0.4_hubert_fp32.engine (fp32), ")
    assert out.splitlines()[-1] == f"built 2 engines in {tmp_path / 'engines'}"
    assert "ditto_trt_*/ folder" in err  # "engines" is not where the backend looks
    assert [(b["opt_level"], b["hardware"], b["pools"]) for b in trt.builds] == [
        (3, "AMPERE_PLUS", {"WORKSPACE": 2 * 2**30})] * 2
    assert cache.read_bytes() == b"|stitch_network.onnx|lmdm_v0.4_hubert.onnx"


def test_cli_errors_are_one_line(install, monkeypatch, tmp_path, capsys):
    def error_of(*args: str) -> str:
        code, _, err = run_cli(capsys, *args)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        return err.strip()

    install()
    out = str(tmp_path / "ditto_trt_custom")
    missing = tmp_path / "nowhere"
    assert error_of("--onnx", str(missing), "--out", out) == (
        f"ditto-fast build-engines: error: {missing}: ONNX folder does not exist")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(ONNX_DIR / "decoder.onnx", partial)
    message = error_of("--onnx", str(partial), "--out", out)
    assert "no ONNX file for appearance_extractor (appearance_extractor.onnx);" in message
    assert "warp_network (warp_network.onnx or warp_network_ori.onnx);" in message
    assert "decoder" not in message.split("no ONNX file for")[1]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "a_file/engines: cannot write engines there" in error_of(
        "--onnx", str(ONNX_DIR), "--out", str(blocker / "engines"), "--only", "decoder")
    assert "the batch must be at least 1" in error_of("--onnx", str(ONNX_DIR), "--out", out, "--batch", "0")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    message = error_of("--onnx", str(ONNX_DIR), "--out", out, "--only", "decoder")
    assert "needs NVIDIA TensorRT 10's Python package" in message and "pip install tensorrt" in message
    assert not Path(out).exists()  # nothing created for a build that cannot run

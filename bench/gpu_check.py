#!/usr/bin/env python3
"""The one-shot GPU check: every GPU claim of ditto_fast measured into ONE JSON file.

Run through `bench/gpu_check.sh` (which installs the project offline first, see there):

    bench/gpu_check.sh --fetch-wheels            # once, on a networked machine: .whl/wheelhouse.tar.xz
    bench/gpu_check.sh --out DIR                 # on the GPU machine (carry .whl): DIR/gpu_check.json
    bench/gpu_check.sh --rehearse --out DIR      # the same end to end on the CPU, small sizes (CI)

or directly, in an environment where ditto_fast is installed:

    python3 bench/gpu_check.py --out DIR/gpu_check.json [--rehearse] [--deadline EPOCH] [--only S ...]

Sections, in order (each entry in `sections` is {"status": "measured" | "skipped" | "failed",
"reason" (skipped, failed), "on": "cuda" | "cpu", "seconds", "results": {...}}; inside `results`
a measurement that could not be made is {"skipped": reason} or {"error": message}; every skip is
also listed, with its reason, in the top-level `skipped`):

- machine: GPU name, compute capability, memory, driver (nvidia-smi), the fp16 peak used below;
  torch / CUDA / cuDNN / Triton / CuPy / onnxruntime / PyAV / soxr versions; ditto_fast._core's
  CUDA build and what `ditto-fast info` says.
- install: what bench/gpu_check.sh did (offline wheel install, dry-run resolution, the build,
  the import check), read from its install.json.
- tree: the full-size synthetic tree written on the spot (the synthetic-tiny layout with the six
  core .pth at real size and random weights, as `ditto-fast synth --size full` writes them; its
  ONNX export is skipped, the torch backend reads .pth only). Rehearsal: synthetic-tiny itself.
- kernels: each Triton kernel against its reference: 5-D grid sample vs torch's grid_sample
  (fp32, fp16), paste-back vs the C++ CPU kernel (bytes; fp32 and fp16 renders) and the torch
  version, the DDIM update vs NumPy (bits), 49 DDIM updates replayed from one CUDA graph vs eager;
  device timings.
- correctness_fp32: the device path vs the CPU path (torch fp32 on the CPU, same weights, same
  inputs recorded from a CPU render): max abs diff per stage (appearance, motion, stitch, warp,
  decoder, one LMDM clip) with TF32 off, and the rendered frames (fp32 forced on the device).
- correctness_fp16: the same under the shipped precision policy (fp16 autocast for appearance,
  warp, decoder, stitch), against the stated tolerance (`results.tolerance`), stages and frames.
- cuda_graphs: WarpDecode replayed from its CUDA graph vs eager, full and short (padded) batch;
  FrameRenderer frames through the device ring writer, graphs on vs off.
- tflops: warp + decode alone per batch (1/4/8/16/32, fp16 policy, graphs): frames/s, achieved
  TFLOP/s and the share of the GPU's fp16 peak, FLOP per frame counted (1.23 TFLOP at full size).
- offline: frames/s of a whole render into the frame iterator (no encoder) and into an mp4
  (libx264, the default preset), batch 1/4/8/16/32, 50 and 10 DDIM steps, fp16 policy.
- online: compute latency from audio in (all pushed at once) to the first frame, 50 and 10 steps.
- serving: N live sessions through `SessionEngine`, audio pushed in real time, N = 1, 2, 4, ...:
  late frames, first-frame latencies, which N is sustained at 25 fps, GPU memory per session.

Budget: the JSON is rewritten after every section (and every measurement), so a run stopped at
any point keeps what finished. A section starts only when its estimate fits before --deadline,
runs under its own time limit (SIGALRM), and a watchdog ends the process past the deadline.

Rehearsal (`--rehearse`, also implied without CUDA): the same sections, keys and code paths on
the CPU with synthetic-tiny, a small portrait and short audio; the Triton kernels run under
TRITON_INTERPRET=1; "device" means torch on the CPU; CUDA-only items (graph replay, memory,
nvidia-smi) are {"skipped": reason}. It proves the script runs, not any GPU figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = "ditto-fast-gpu-check/1"
ROOT = Path(__file__).resolve().parents[1]
FLOP_PER_FRAME_FULL = 1.2337e12  # warp 342 GF + decoder 892 GF per frame at full size (DITTO_SPEC §4)
# Dense fp16 tensor-core peak (no sparsity), by the name torch reports.
PEAK_FP16_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0))
BATCHES = (1, 4, 8, 16, 32)
STEPS = (50, 10)
STAGES = ("appearance_extractor", "motion_extractor", "stitch_network", "warp_network", "decoder")
# fp16 policy vs CPU fp32: per stage, max |diff| over the reference's largest |value|; frames: PSNR.
FP16_TOLERANCE = {"stage_max_abs_over_ref_range": 0.05, "frames_min_psnr_db": 30.0,
                  "note": "random weights: stated for the synthetic tree, not a quality claim"}
FP32_TOLERANCE = {"stage_max_abs_over_ref_range": 1e-3, "frames_max_diff": 2}

# Every section, in run order, and the result keys a measured section always has.
RESULT_KEYS: dict[str, tuple[str, ...]] = {
    "machine": ("gpu", "driver", "versions", "core", "environment", "peak_fp16_tflops", "cpu_count"),
    "install": ("mode", "steps"),
    "tree": ("path", "kind", "write_s", "parameters"),
    "kernels": ("grid_sample_3d", "paste_back", "ddim_update", "ddim_graph"),
    "correctness_fp32": ("stages", "lmdm", "frames", "tolerance", "within_tolerance"),
    "correctness_fp16": ("stages", "lmdm", "frames", "tolerance", "within_tolerance"),
    "cuda_graphs": ("warp_decode_full_batch", "warp_decode_short_batch", "frame_renderer_frames"),
    "tflops": ("flop_per_frame", "flop_per_frame_counted", "peak_fp16_tflops", "batches"),
    "offline": ("config", "frames_only", "mp4"),
    "online": ("config", "first_frame_s"),
    "serving": ("config", "trials", "sessions_sustained_at_25fps", "memory_per_session_gib"),
}
SECTIONS = tuple(RESULT_KEYS)
STATUSES = ("measured", "skipped", "failed")


# -- the JSON shape (the test checks a rehearsal's file with this) ------------------------------

def shape_problems(doc: dict) -> list[str]:
    """What is wrong with a gpu_check JSON's shape: every section present, each measured with all
    its result keys, or skipped/failed with a reason; every {"skipped": ...} item has a reason."""
    problems = []
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    sections = doc.get("sections", {})
    for name in SECTIONS:
        entry = sections.get(name)
        if not isinstance(entry, dict):
            problems.append(f"section {name} missing")
            continue
        status = entry.get("status")
        if status not in STATUSES:
            problems.append(f"section {name}: status {status!r}")
        elif status == "measured":
            missing = [k for k in RESULT_KEYS[name] if k not in entry.get("results", {})]
            if missing:
                problems.append(f"section {name}: results lack {missing}")
        elif not entry.get("reason"):
            problems.append(f"section {name}: {status} without a reason")
    for path, value in _leaves(sections):
        if path.endswith(".skipped") and not (isinstance(value, str) and value):
            problems.append(f"{path}: skipped without a reason")
    return problems


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else str(k))]
    return [(path, value)]


def errors_in(doc: dict) -> list[str]:
    """Paths of every failed section and every {"error": ...} item."""
    found = [f"{name}: {e.get('reason')}" for name, e in doc.get("sections", {}).items() if e.get("status") == "failed"]
    found += [f"{p}: {v}" for p, v in _leaves(doc.get("sections", {})) if p.endswith(".error")]
    return found


# -- the run's state ---------------------------------------------------------------------------

class SectionTimeout(Exception):
    pass


class SectionSkip(Exception):
    """Raised by a section body: the section is skipped, with this reason."""


class Check:
    """The document, its file, the clock and the guards (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        self.deadline = args.deadline or (self.started + args.budget)
        self.lock = threading.RLock()
        self.doc: dict = {"schema": SCHEMA, "mode": "rehearsal" if args.rehearse else "gpu",
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "deadline_in_s": round(self.left(), 1),
                          "argv": sys.argv[1:], "config": {}, "sections": {}, "skipped": [], "summary": {}}

    def left(self) -> float:
        return self.deadline - time.time()

    def save(self) -> None:
        with self.lock:
            self.doc["elapsed_s"] = round(time.time() - self.started, 1)
            text = json.dumps(_strict(self.doc), indent=1, default=str)
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(self.out)

    def skip(self, where: str, reason: str) -> dict:
        with self.lock:
            self.doc["skipped"].append(f"{where}: {reason}")
        return {"skipped": reason}

    def item(self, results: dict, key: str, fn: Callable[[], Any], where: str, need_s: float = 0.0) -> Any:
        """results[key] = fn(); a failure is stored as {"error": ...} and the section goes on;
        skipped when less than `need_s` is left of the budget."""
        if need_s and self.left() < need_s:
            results[key] = self.skip(f"{where}.{key}", f"budget: {self.left():.0f} s left < {need_s:.0f} s needed")
        else:
            try:
                results[key] = fn()
            except SectionTimeout:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                results[key] = {"error": f"{type(exc).__name__}: {exc}"[:800],
                                "traceback": traceback.format_exc()[-2000:]}
                log(f"  {where}.{key}: {type(exc).__name__}: {exc}")
        self.save()
        return results[key]

    def run_section(self, name: str, estimate_s: float, limit_s: float, fn: Callable[[dict], None], on: str) -> None:
        entry: dict = {"status": "skipped", "on": on, "seconds": 0.0, "results": {}}
        self.doc["sections"][name] = entry
        if self.args.only and name not in self.args.only:
            entry["reason"] = "not in --only"
            self.skip(name, entry["reason"])
            self.save()
            return
        if self.left() < estimate_s:
            entry["reason"] = f"budget: {self.left():.0f} s left < estimate {estimate_s:.0f} s"
            self.skip(name, entry["reason"])
            self.save()
            log(f"[{name}] skipped: {entry['reason']}")
            return
        limit = max(5.0, min(limit_s, self.left() - 5))
        entry.update(status="running", limit_s=round(limit, 1))
        self.save()
        log(f"[{name}] start ({self.left():.0f} s left, limit {limit:.0f} s)")
        started = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            fn(entry["results"])
            entry["status"] = "measured"
        except SectionTimeout:
            entry.update(status="failed", reason=f"timeout: the section ran past its {limit:.0f} s limit",
                         traceback=traceback.format_exc()[-3000:])
        except SectionSkip as exc:
            entry.update(status="skipped", reason=str(exc))
            self.skip(name, str(exc))
        except Exception as exc:  # noqa: BLE001
            entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:800],
                         traceback=traceback.format_exc()[-3000:])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            entry["seconds"] = round(time.perf_counter() - started, 2)
            self.save()
            log(f"[{name}] {entry['status']} in {entry['seconds']} s" + (f": {entry.get('reason')}" if
                                                                         entry["status"] == "failed" else ""))

    def watchdog(self, grace_s: float) -> None:
        """Past the deadline + grace: save what there is and end the process (a hung CUDA call
        would never see SIGALRM's exception)."""
        def watch() -> None:
            while True:
                time.sleep(1.0)
                if self.left() < -grace_s:
                    with self.lock:
                        self.doc["watchdog"] = f"ended {grace_s:.0f} s past the deadline"
                        for entry in self.doc["sections"].values():
                            if entry.get("status") == "running":
                                entry.update(status="failed", reason="watchdog: past the deadline")
                        self.save()
                    os._exit(124)
        threading.Thread(target=watch, name="gpu-check-watchdog", daemon=True).start()


def _raise_timeout(signum, frame):  # noqa: ARG001
    raise SectionTimeout()


def _strict(value: Any) -> Any:
    """inf/nan as strings, NumPy scalars as Python numbers: the file stays strict JSON."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# -- helpers -----------------------------------------------------------------------------------

class Env:
    """The device, sizes and shared objects of one run."""

    def __init__(self, check: Check) -> None:
        import torch

        self.check = check
        self.torch = torch
        self.cuda = torch.cuda.is_available() and not check.args.force_cpu
        self.rehearse = check.args.rehearse or not self.cuda
        self.device = "cuda" if self.cuda else "cpu"
        self.scratch = Path(tempfile.mkdtemp(prefix="ditto_gpu_check_"))
        r = self.rehearse
        self.sizes = {
            "portrait": 256 if r else 1432,       # demo portrait side = the output frame size
            "offline_audio_s": 0.2 if r else 8.0,
            "correctness_audio_s": 0.08 if r else 0.2,
            "correctness_batch": 2 if r else 8,
            "graphs_batch": 2 if r else 8,
            "tflops_batches": (1,) if r else BATCHES,
            "correctness_steps": 5 if r else 10,
            "online_audio_s": 1.2 if r else 3.0,
            "online_repeats": 1 if r else 3,
            "serving_audio_s": 1.0 if r else 5.0,
            "serving_sessions": (1, 2) if r else (1, 2, 4, 8, 16, 24, 32, 48, 64),
            "kernel_volume": (2, 4, 4, 8, 8) if r else (8, 32, 16, 64, 64),
            "kernel_frames": {"96x128": (96, 128)} if r else {"1432x1432": (1432, 1432), "1080x1920": (1080, 1920)},
            "timing_iters": 1 if r else 10,
            # torch on the CPU is ~1 s a frame even at synthetic-tiny size: the rehearsal's speed sections
            # (the Renderer / StreamSession / SessionEngine APIs, whatever the executor) use onnxruntime.
            "speed_backend": "onnxruntime" if r else "torch",
        }
        check.doc["config"] = {"device": self.device, "rehearsal": self.rehearse, "batches": list(BATCHES),
                               "steps": list(STEPS), **{k: v for k, v in self.sizes.items()}}
        self.tree: Path | None = None
        self._renderers: dict = {}
        self._portraits: dict[int, Path] = {}

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def mem_gib(self, peak: bool = False) -> float | None:
        if not self.cuda:
            return None
        t = self.torch.cuda
        return round((t.max_memory_allocated() if peak else t.memory_allocated()) / 2**30, 3)

    def timed(self, fn: Callable[[], Any], iters: int | None = None, warmup: int = 2) -> float:
        """Median seconds per call of fn(), device work included."""
        import statistics

        iters = iters or self.sizes["timing_iters"]
        for _ in range(warmup):
            fn()
        self.sync()
        samples = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            self.sync()
            samples.append(time.perf_counter() - t)
        return statistics.median(samples)

    def portrait(self, size: int) -> Path:
        if size not in self._portraits:
            import cv2

            from ditto_fast.tools.demo import demo_portrait

            path = self.scratch / f"portrait{size}.png"
            cv2.imwrite(str(path), cv2.cvtColor(demo_portrait(size), cv2.COLOR_RGB2BGR))
            self._portraits[size] = path
        return self._portraits[size]

    def renderer(self, device: str, frame_batch: int = 1, fp32: bool = False, backend: str = "torch"):
        """A Renderer of the run's tree, cached per (device, precision, backend)."""
        key = (device, fp32, backend)
        if key not in self._renderers:
            from ditto_fast import Renderer

            with forced_fp32(fp32):
                self._renderers[key] = Renderer(self.tree, backend=backend, device=device, frame_batch=frame_batch)
        r = self._renderers[key]
        r.frame_batch = frame_batch
        return r

    def speed_renderer(self, frame_batch: int = 1):
        """The renderer the speed sections time: torch on the device (a rehearsal: onnxruntime, CPU)."""
        backend = self.sizes["speed_backend"]
        return self.renderer(self.device if backend == "torch" else "cpu", frame_batch, backend=backend)

    def drop_renderers(self) -> None:
        self._renderers.clear()
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


@contextmanager
def forced_fp32(enabled: bool):
    """Networks loaded inside run fp32 on any device (the policy's fp16 switched off)."""
    if not enabled:
        yield
        return
    import ditto_fast.backends.torch as torch_backend
    from ditto_fast.runtime.precision import Precision

    original = torch_backend.precision_for
    torch_backend.precision_for = lambda name, device: Precision(channels_last=original(name, device).channels_last)
    try:
        yield
    finally:
        torch_backend.precision_for = original


@contextmanager
def strict_fp32(torch):
    """TF32 off (cuDNN convolutions and matmuls): fp32 on the device means fp32."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def crop_matrix(scale: float, degrees: float, tx: float, ty: float):
    import numpy as np

    angle = np.deg2rad(degrees)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def psnr(a, b, peak: float = 255.0) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else round(10 * math.log10(peak * peak / mse), 2)


def diff_stats(got, ref) -> dict:
    import numpy as np

    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    d = np.abs(got - ref)
    scale = float(np.abs(ref).max()) or 1.0
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "ref_max_abs": scale,
            "max_abs_over_ref_range": float(d.max() / scale), "nan_or_inf": int((~np.isfinite(got)).sum())}


def frame_stats(got: list, ref: list) -> dict:
    import numpy as np

    if not got or len(got) != len(ref):
        return {"frames": len(got), "expected": len(ref), "same_count": False}
    d = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(got, ref)]
    return {"frames": len(got), "same_count": True, "max_diff": int(max(x.max() for x in d)),
            "mean_abs_diff": float(np.mean([x.mean() for x in d])),
            "frac_values_off_by_more_than_2": float(np.mean([(x > 2).mean() for x in d])),
            "min_psnr_db": min((psnr(a, b) for a, b in zip(got, ref)), key=float)}


# -- sections ----------------------------------------------------------------------------------

def s_machine(env: Env, r: dict) -> None:
    torch = env.torch
    versions = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "platform": platform.platform()}
    for module, label in (("triton", "triton"), ("cupy", "cupy"), ("onnxruntime", "onnxruntime"), ("av", "av"),
                          ("soxr", "soxr"), ("numpy", "numpy"), ("cv2", "opencv"), ("ditto_fast", "ditto_fast")):
        try:
            versions[label] = str(getattr(__import__(module), "__version__", "unknown"))
        except Exception as exc:  # noqa: BLE001
            versions[label] = f"missing: {type(exc).__name__}: {exc}"[:200]
    import ditto_fast

    versions["ditto_fast_file"] = ditto_fast.__file__
    r["versions"] = versions
    r["cpu_count"] = os.cpu_count()
    if env.cuda:
        p = torch.cuda.get_device_properties(0)
        r["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
                    "memory_gib": round(p.total_memory / 2**30, 1)}
    else:
        r["gpu"] = env.check.skip("machine.gpu", "no CUDA device visible to torch")
    r["peak_fp16_tflops"] = peak_tflops(env)
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        r["driver"] = {"nvidia_smi": (q.stdout or q.stderr).strip()}
    else:
        r["driver"] = env.check.skip("machine.driver", "nvidia-smi not found")
    from ditto_fast import _core

    r["core"] = {"cuda_compiled": bool(_core.cuda_compiled), "architectures": _core.cuda_architectures,
                 "runtime": _core.cuda_runtime_version() if _core.cuda_compiled else None,
                 "devices": [str(d) for d in _core.cuda_devices()] if _core.cuda_compiled else []}
    from ditto_fast.environment import describe_environment

    r["environment"] = describe_environment().lines()
    r["triton_interpret"] = os.environ.get("TRITON_INTERPRET", "")


def peak_tflops(env: Env) -> float | None:
    if not env.cuda:
        return None
    name = env.torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_FP16_TFLOPS if k in name), None)


def s_install(env: Env, r: dict) -> None:
    path = env.check.args.install_json
    if not path:
        raise SectionSkip("run directly, not through bench/gpu_check.sh: no install record")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no install record")
    record = json.loads(Path(path).read_text())
    r.update(record)
    bad = [s for s in record.get("steps", []) if s.get("rc") not in (0, None)]
    if bad:
        raise RuntimeError("install steps failed: " + ", ".join(f"{s['name']} rc={s['rc']}" for s in bad))


def s_tree(env: Env, r: dict) -> None:
    from ditto_fast.checkpoints import PYTORCH_DIR, PYTORCH_FILES, file_stem
    from ditto_fast.tools.export import CORE_NETWORKS

    tiny = ROOT / "checkpoints" / "synthetic-tiny"
    if not tiny.is_dir():
        from ditto_fast.checkpoints import default_tree

        tiny = Path(default_tree())  # the copy installed as package data
    started = time.perf_counter()
    params = {}
    if env.check.args.tree:
        env.tree, kind = Path(env.check.args.tree), "given (--tree)"
    elif env.rehearse:
        env.tree, kind = tiny, "synthetic-tiny (rehearsal)"
    else:
        from ditto_fast.tools.synthetic.torch_checkpoints import write_checkpoint

        env.tree = env.scratch / "full"
        shutil.copytree(tiny, env.tree)
        for offset, network in enumerate(CORE_NETWORKS):
            params[network] = write_checkpoint(network, env.tree / PYTORCH_DIR / PYTORCH_FILES[file_stem(network)],
                                               "full", offset)
        kind = "full: synthetic-tiny layout, core .pth at real size (random weights, seeds 0..5)"
    r.update(path=str(env.tree), kind=kind, write_s=round(time.perf_counter() - started, 2),
             parameters=params or env.check.skip("tree.parameters", "not written here (tiny or given tree)"))


def s_kernels(env: Env, r: dict) -> None:
    import numpy as np

    torch = env.torch
    dev = env.device
    check = env.check

    def grid_sample():
        import torch.nn.functional as F

        from ditto_fast.kernels.grid_sample_3d import grid_sample_3d

        g = torch.Generator().manual_seed(0)
        shape = env.sizes["kernel_volume"]
        vol = torch.randn(shape, generator=g).to(dev)
        grid = (torch.rand((shape[0], *shape[2:], 3), generator=g) * 2.2 - 1.1).to(dev)
        out = {"shape": list(shape)}
        for dt in (torch.float32, torch.float16):
            v = vol.to(dt)
            ref = F.grid_sample(v.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            got = grid_sample_3d(v, grid)
            e = {"max_abs_err": float((got.float() - ref).abs().max()),
                 "tolerance": 1e-5 if dt == torch.float32 else 1e-3}
            e["within_tolerance"] = e["max_abs_err"] <= e["tolerance"] * (1 if dt == torch.float32 else
                                                                             float(ref.abs().max()) or 1)
            if env.cuda:
                e["triton_ms"] = round(env.timed(lambda v=v: grid_sample_3d(v, grid)) * 1e3, 3)
                e["torch_ms"] = round(env.timed(lambda v=v: F.grid_sample(v, grid.to(v.dtype), align_corners=False))
                                      * 1e3, 3)
            out[str(dt).removeprefix("torch.")] = e
        return out

    def paste_back():
        from ditto_fast.ops.paste_back import PasteBack, paste_mask, render_to_hwc
        from ditto_fast.ops.paste_torch import TorchPasteBack
        from ditto_fast.ops.paste_triton import triton_paste_back

        mask = torch.from_numpy(paste_mask()).to(dev)
        out = {}
        for label, (h, w) in env.sizes["kernel_frames"].items():
            rng = np.random.default_rng(1)
            frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            render = rng.random((1, 3, 512, 512), dtype=np.float32)
            m = crop_matrix(1.4 if h > 500 else 0.15, 7.0, w * 0.25, h * 0.12)
            fd, rd = torch.from_numpy(frame).to(dev), torch.from_numpy(render).to(dev)
            e = {}
            for rdt in (torch.float32, torch.float16):
                rr = rd.to(rdt)
                ref = PasteBack()(frame, render_to_hwc(rr.float().cpu().numpy()), m)
                got = triton_paste_back(fd, rr, mask, m, out=torch.empty_like(fd)).cpu().numpy()
                d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
                name = str(rdt).removeprefix("torch.")
                e[f"triton_{name}_bytes_differing"] = int((d > 0).sum())
                e[f"triton_{name}_max_diff"] = int(d.max())
            tp = TorchPasteBack()(fd, rd, mask, m, out=torch.empty_like(fd)).cpu().numpy()
            ref = PasteBack()(frame, render_to_hwc(render), m)
            e["torch_max_diff"] = int(np.abs(tp.astype(np.int16) - ref.astype(np.int16)).max())
            e["bit_exact"] = e["triton_float32_bytes_differing"] == 0
            if env.cuda:
                slot = torch.empty_like(fd)
                args = (fd, rd, mask, m)
                e["triton_ms"] = round(env.timed(lambda a=args, o=slot: triton_paste_back(*a, out=o)) * 1e3, 3)
                e["torch_ms"] = round(env.timed(lambda a=args, o=slot: TorchPasteBack()(*a, out=o)) * 1e3, 3)
            t = time.perf_counter()
            PasteBack()(frame, render_to_hwc(render), m)
            e["cpu_cxx_ms"] = round((time.perf_counter() - t) * 1e3, 3)
            out[label] = e
        return out

    rng = np.random.default_rng(2)
    x0, eps, noise = (rng.standard_normal((1, 80, 265), dtype=np.float32) for _ in range(3))
    a, c, s = np.float32(0.97), np.float32(0.11), np.float32(0.05)

    def ddim():
        from ditto_fast.kernels.ddim import ddim_update

        expect = (x0 * a + c * eps) + s * noise
        got = ddim_update(*(torch.from_numpy(v).to(dev) for v in (x0, eps, noise)), float(a), float(c),
                          float(s)).cpu().numpy()
        return {"bit_exact": bool(np.array_equal(got, expect)), "mismatches": int((got != expect).sum())}

    def ddim_graph():
        if not env.cuda:
            return check.skip("kernels.ddim_graph", "no CUDA: graphs need a GPU")
        from ditto_fast.kernels.ddim import ddim_update
        from ditto_fast.runtime.graphs import CudaGraphCapture, GraphedFunction

        xs = [torch.from_numpy(v).to(dev) for v in (x0, eps, noise)]

        def loop(x, e, n):
            x = x.clone()
            for _ in range(49):
                ddim_update(x, e, n, float(a), float(c), float(s), out=x)
            return x

        eager = loop(*xs)
        graphed = GraphedFunction(loop, CudaGraphCapture())
        replay = graphed(*xs).clone()
        return {"graph_equals_eager": bool(torch.equal(replay, eager)),
                "eager_ms": round(env.timed(lambda: loop(*xs)) * 1e3, 3),
                "graph_ms": round(env.timed(lambda: graphed(*xs)) * 1e3, 3)}

    check.item(r, "grid_sample_3d", grid_sample, "kernels")
    check.item(r, "paste_back", paste_back, "kernels")
    check.item(r, "ddim_update", ddim, "kernels")
    check.item(r, "ddim_graph", ddim_graph, "kernels")


class Recorded:
    """The first inputs each torch network saw during a CPU render (and its LMDM sampler call),
    and that render's frames."""

    def __init__(self) -> None:
        self.inputs: dict[str, tuple] = {}
        self.lmdm: tuple | None = None
        self.frames: list = []
        self.avatar = None
        self.audio = None


def record_cpu_render(env: Env) -> Recorded:
    """A CPU torch render (fp32) of the demo portrait, recording what each network was given."""
    import numpy as np

    from ditto_fast.backends.torch import TorchNetwork
    from ditto_fast.stages.motion import DDIMSampler
    from ditto_fast.tools.demo import demo_speech

    rec = Recorded()
    real_run, real_sample = TorchNetwork.run_on_device, DDIMSampler.sample

    def run_on_device(self, *tensors):
        rec.inputs.setdefault(self.name, tuple(t.detach().clone().cpu() for t in tensors))
        return real_run(self, *tensors)

    def sample(self, lmdm, kp_cond, cond, x_T):
        if rec.lmdm is None:
            rec.lmdm = (self, np.array(kp_cond), np.array(cond), np.array(x_T))
        return real_sample(self, lmdm, kp_cond, cond, x_T)

    cpu = env.renderer("cpu")
    TorchNetwork.run_on_device, DDIMSampler.sample = run_on_device, sample
    try:
        rec.avatar = cpu.register(env.portrait(env.sizes["portrait"]))
        rec.audio = demo_speech(env.sizes["correctness_audio_s"])
        rec.frames = [f.rgb.copy() for f in cpu.render(rec.avatar, rec.audio, seed=0,
                                                       sampling_timesteps=env.sizes["correctness_steps"])]
    finally:
        TorchNetwork.run_on_device, DDIMSampler.sample = real_run, real_sample
    return rec


def correctness(env: Env, r: dict, rec_box: dict, fp32: bool) -> None:
    """Per stage and on rendered frames: the device path (fp32 forced, or the fp16 policy) vs the
    CPU fp32 path, same weights and inputs."""
    torch = env.torch
    check = env.check
    where = "correctness_fp32" if fp32 else "correctness_fp16"
    tolerance = FP32_TOLERANCE if fp32 else FP16_TOLERANCE
    r["tolerance"] = tolerance
    r["tf32"] = "off" if fp32 else "torch default"
    if "rec" not in rec_box:
        rec_box["rec"] = record_cpu_render(env)
    rec: Recorded = rec_box["rec"]
    cpu = env.renderer("cpu")
    guard = strict_fp32(torch) if fp32 else _null()
    with guard:
        dev = env.renderer(env.device, frame_batch=env.sizes["correctness_batch"], fp32=fp32)
        stages: dict = {}
        for name in STAGES:
            def one(name=name):
                if name not in rec.inputs:
                    return check.skip(f"{where}.stages.{name}", "the CPU render never called it")
                inputs = rec.inputs[name]
                ref = cpu.networks[name].run_on_device(*inputs)
                net = dev.networks[name]
                got = net.run_on_device(*(t.to(env.device) for t in inputs))
                per_output = [diff_stats(g.cpu().numpy(), x.numpy()) for g, x in zip(got, ref)]
                worst = max(per_output, key=lambda d: d["max_abs_over_ref_range"])
                return {"precision": repr(net.precision), "outputs": per_output,
                        "max_abs": worst["max_abs"], "max_abs_over_ref_range": worst["max_abs_over_ref_range"],
                        "within_tolerance": worst["max_abs_over_ref_range"] <= tolerance["stage_max_abs_over_ref_range"]
                        and worst["nan_or_inf"] == 0}
            check.item(stages, name, one, f"{where}.stages")
        r["stages"] = stages

        def lmdm():
            if rec.lmdm is None:
                return check.skip(f"{where}.lmdm", "the CPU render ran no LMDM clip")
            sampler, kp_cond, cond, x_T = rec.lmdm
            ref = sampler.sample(cpu.networks["lmdm"], kp_cond, cond, x_T)
            got = sampler.sample(dev.networks["lmdm"], kp_cond, cond, x_T)
            d = diff_stats(got, ref)
            d.update(steps=len(sampler.tables.time_pairs), precision=repr(dev.networks["lmdm"].precision),
                     within_tolerance=d["max_abs_over_ref_range"] <= tolerance["stage_max_abs_over_ref_range"])
            return d

        check.item(r, "lmdm", lmdm, where)

        def frames():
            got = [f.rgb.copy() for f in dev.render(rec.avatar, rec.audio, seed=0,
                                                    sampling_timesteps=env.sizes["correctness_steps"])]
            s = frame_stats(got, rec.frames)
            s["frame_batch"] = dev.frame_batch
            if s.get("same_count"):
                s["within_tolerance"] = (s["max_diff"] <= tolerance["frames_max_diff"] if fp32
                                         else float(s["min_psnr_db"]) >= tolerance["frames_min_psnr_db"])
            else:
                s["within_tolerance"] = False
            return s

        check.item(r, "frames", frames, where)
    flags = [v.get("within_tolerance") for v in (*stages.values(), r["lmdm"], r["frames"]) if isinstance(v, dict)
             and "within_tolerance" in v]
    r["within_tolerance"] = bool(flags) and all(flags)


@contextmanager
def _null():
    yield


def s_cuda_graphs(env: Env, r: dict) -> None:
    import numpy as np

    from ditto_fast._core import FrameRing
    from ditto_fast.pipeline.frames import FrameRenderer
    from ditto_fast.pipeline.warp_decode import WarpDecode
    from ditto_fast.stages.motion import motion_dict_to_vector

    torch = env.torch
    check = env.check
    dev = env.renderer(env.device, frame_batch=env.sizes["graphs_batch"])
    avatar = dev.register(env.portrait(env.sizes["portrait"]))
    rng = np.random.default_rng(3)
    batch = env.sizes["graphs_batch"]
    f_s = torch.from_numpy(np.ascontiguousarray(avatar.f_s[0])).to(env.device)
    graphed, eager = WarpDecode(dev.networks, batch), WarpDecode(dev.networks, batch, graphs=False)

    def compare(n: int):
        x_s = ((rng.random((n, 21, 3), dtype=np.float32) - 0.5) * 0.6).astype(np.float32)
        x_d = (x_s + rng.normal(0, 0.02, x_s.shape)).astype(np.float32)
        feats = [f_s] * n
        with graphed.activate():
            # On CUDA the first call captures; the second replays with new keypoints.
            first = graphed(feats, x_s, x_s).clone() if env.cuda else None
            got = graphed(feats, x_s, x_d).clone()
        with eager.activate():
            ref = eager(feats, x_s, x_d).clone()
        env.sync()
        return {"frames": n, "graphed": bool(graphed._device is not None and graphed._device.graph.graphed),
                "captured": len(graphed._device.graph.captured) if graphed._device else 0,
                "replay_vs_eager_max_abs": float((got - ref).abs().max()),
                "replay_equals_eager": bool(torch.equal(got, ref)),
                "replay_tracks_new_inputs": bool(not torch.equal(first, got)) if first is not None else None,
                "nan_or_inf": int((~torch.isfinite(ref)).sum())}

    check.item(r, "warp_decode_full_batch", lambda: compare(batch), "cuda_graphs")
    check.item(r, "warp_decode_short_batch", lambda: compare(max(1, batch - 5) if batch > 5 else batch - 1),
               "cuda_graphs")

    def frames():
        options = dev.options(seed=0)
        neutral = motion_dict_to_vector(avatar.motion_info(0))
        count = batch + max(1, batch // 2 - 1)  # one full batch and a short one
        motion = np.stack([neutral + rng.normal(0, 0.05, neutral.shape).astype(np.float32) for _ in range(count)])
        out = {}
        for label, graphs in (("graphs", True), ("eager", False)):
            fr = FrameRenderer(dev.networks, avatar, options, len(motion), batch_size=batch, graphs=graphs)
            h, w = avatar.frame_size
            ring = FrameRing(len(motion) + 1, h, w, 3)
            with fr.writer(ring) as writer:
                fr.render_block(writer, 0, motion)
            taken = []
            for _ in motion:
                with ring.take(timeout=30) as t:
                    taken.append(t.array.copy())
            out[label] = taken
            out[f"{label}_ring_memory"] = getattr(ring, "memory_kind", None)
        s = frame_stats(out["graphs"], out["eager"])
        s.update(ring_memory=out["graphs_ring_memory"], batch=batch,
                 note=f"{count} frames at batch {batch}: one full batch and a short one padded to the graph")
        return s

    check.item(r, "frame_renderer_frames", frames, "cuda_graphs")
    if not env.cuda:
        r["note"] = "no CUDA: GraphedFunction runs eagerly, so these compare eager with eager"


def s_tflops(env: Env, r: dict) -> None:
    import numpy as np

    from ditto_fast.pipeline.warp_decode import WarpDecode

    torch = env.torch
    check = env.check
    dev = env.renderer(env.device, frame_batch=env.sizes["graphs_batch"])
    avatar = dev.register(env.portrait(env.sizes["portrait"]))
    f_s = torch.from_numpy(np.ascontiguousarray(avatar.f_s[0])).to(env.device)
    rng = np.random.default_rng(4)

    def counted():
        from torch.utils.flop_counter import FlopCounterMode

        x = ((rng.random((1, 21, 3), dtype=np.float32) - 0.5) * 0.6).astype(np.float32)
        wd = WarpDecode(dev.networks, 1, graphs=False)
        with FlopCounterMode(display=False) as counter, wd.activate():
            wd([f_s], x, x)
        return int(counter.get_total_flops())

    flops = check.item(r, "flop_per_frame_counted", counted, "tflops")
    full = env.tree is not None and not env.rehearse
    r["flop_per_frame"] = FLOP_PER_FRAME_FULL if full else (flops if isinstance(flops, int) else None)
    r["peak_fp16_tflops"] = peak_tflops(env)
    batches: dict = {}
    r["batches"] = batches
    for b in BATCHES:
        if b not in env.sizes["tflops_batches"]:
            batches[f"b{b}"] = check.skip(f"tflops.batches.b{b}", "rehearsal: torch on the CPU is ~1 s a frame; "
                                          "batch 1 exercises the code")
            continue

        def one(b=b):
            wd = WarpDecode(dev.networks, b)
            x_s = ((rng.random((b, 21, 3), dtype=np.float32) - 0.5) * 0.6).astype(np.float32)
            feats = [f_s] * b
            if env.cuda:
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            with wd.activate():
                wd(feats, x_s, x_s)
            env.sync()
            first = time.perf_counter() - t

            def call():
                with wd.activate():
                    wd(feats, x_s, x_s)

            s = env.timed(call, warmup=0 if env.rehearse else 1)
            e = {"ms_per_batch": round(s * 1e3, 3), "frames_per_s": round(b / s, 1), "first_call_s": round(first, 3),
                 "graphed": bool(wd._device is not None and wd._device.graph.graphed),
                 "peak_memory_gib": env.mem_gib(peak=True)}
            if r["flop_per_frame"]:
                e["tflops"] = round(r["flop_per_frame"] * b / s / 1e12, 2)
                if r["peak_fp16_tflops"]:
                    e["share_of_peak"] = round(e["tflops"] / r["peak_fp16_tflops"], 4)
            return e

        check.item(batches, f"b{b}", one, "tflops.batches", need_s=10)
    best = [v for v in batches.values() if isinstance(v, dict) and "tflops" in v]
    if best:
        r["best_tflops"] = max(v["tflops"] for v in best)


def s_offline(env: Env, r: dict) -> None:
    from ditto_fast.tools.demo import demo_speech

    check = env.check
    dev = env.speed_renderer(frame_batch=8)
    avatar = dev.register(env.portrait(env.sizes["portrait"]))
    speech = demo_speech(env.sizes["offline_audio_s"])
    r["config"] = {"frame": list(avatar.frame_size), "audio_s": env.sizes["offline_audio_s"],
                   "backend": dev.backend, "precision": "fp16 policy" if env.cuda else "fp32 (CPU)",
                   "encoder": "libx264, default preset"}
    # Warm-up: lazy CUDA/cuDNN set-up, Triton compiles (graphs are captured per job anyway).
    list(f.rgb.shape for f in dev.render(avatar, demo_speech(0.12 if env.rehearse else 0.4), seed=0,
                                         sampling_timesteps=2))
    need = 4 if env.rehearse else 12
    frames_only: dict = {f"steps{s}": {} for s in STEPS}
    mp4: dict = {f"steps{s}": {} for s in STEPS}
    r["frames_only"], r["mp4"] = frames_only, mp4
    for steps in STEPS:
        for b in BATCHES:
            def iterate(b=b, steps=steps):
                dev.frame_batch = b
                if env.cuda:
                    env.torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                times = [time.perf_counter() for _ in dev.render(avatar, speech, seed=0, sampling_timesteps=steps)]
                wall = time.perf_counter() - t0
                n = len(times)
                return {"frames": n, "frames_per_s": round(n / wall, 2), "first_frame_s": round(times[0] - t0, 3),
                        "steady_frames_per_s": round((n - 1) / (times[-1] - times[0]), 2) if n > 1 else None,
                        "peak_memory_gib": env.mem_gib(peak=True)}

            def to_file(b=b, steps=steps):
                dev.frame_batch = b
                res = dev.render_to_file(avatar, speech, env.scratch / f"out_b{b}_s{steps}.mp4", seed=0,
                                         sampling_timesteps=steps, encoder="libx264")
                size = res.path.stat().st_size
                res.path.unlink()
                return {"frames": res.frames, "frames_per_s": round(res.fps, 2), "seconds": round(res.seconds, 3),
                        "bytes": size}

            check.item(frames_only[f"steps{steps}"], f"b{b}", iterate, "offline.frames_only", need_s=need)
            check.item(mp4[f"steps{steps}"], f"b{b}", to_file, "offline.mp4", need_s=need)
    dev.frame_batch = 8
    fps = [(k, b, v["frames_per_s"]) for k, d in frames_only.items() for b, v in d.items() if "frames_per_s" in v]
    if fps:
        best = max(fps, key=lambda x: x[2])
        r["best_frames_only"] = {"steps": best[0], "batch": best[1], "frames_per_s": best[2]}


def s_online(env: Env, r: dict) -> None:
    import statistics

    from ditto_fast.tools.demo import demo_speech

    check = env.check
    dev = env.speed_renderer(frame_batch=1)
    avatar = dev.register(env.portrait(env.sizes["portrait"]))
    speech = demo_speech(env.sizes["online_audio_s"])
    opts = dev.online_options()
    r["config"] = {"audio_s": env.sizes["online_audio_s"], "chunksize": [3, 5, 2],
                   "overlap_v2": getattr(opts, "overlap_v2", None),
                   "frame_batch": 1, "repeats": env.sizes["online_repeats"], "backend": dev.backend,
                   "what": "all audio pushed at once: seconds from the push to the first frame = compute latency; "
                           "the stream is closed after its first frame"}
    first_frame_latency(dev.stream(avatar, seed=0, sampling_timesteps=2), speech)  # warm-up
    first: dict = {}
    r["first_frame_s"] = first
    for steps in STEPS:
        def one(steps=steps):
            samples = [first_frame_latency(dev.stream(avatar, seed=0, sampling_timesteps=steps), speech)
                       for _ in range(env.sizes["online_repeats"])]
            return {"median_s": round(statistics.median(samples), 4), "samples_s": [round(s, 4) for s in samples]}

        check.item(first, f"steps{steps}", one, "online.first_frame_s", need_s=5)


def first_frame_latency(session: Any, audio: Any) -> float:
    """Seconds from pushing all of `audio` (then end()) to holding the first frame; then closed."""
    def feed() -> None:
        try:
            session.push(audio)
            session.end()
        except Exception:  # noqa: BLE001 - closed under a blocked push: expected here
            pass

    with session:
        feeder = threading.Thread(target=feed, name="gpu-check-feed", daemon=True)
        started = time.perf_counter()
        feeder.start()
        for _ in session.frames(timeout=300):
            latency = time.perf_counter() - started
            break
        else:
            raise RuntimeError("online stream: the session made no frame")
    feeder.join(timeout=30)
    return latency


def s_serving(env: Env, r: dict) -> None:
    import numpy as np

    from ditto_fast.serving.engine import SessionEngine
    from ditto_fast.tools.demo import demo_speech

    check = env.check
    torch = env.torch
    dev = env.speed_renderer(frame_batch=1)
    portrait = env.portrait(env.sizes["portrait"])
    seconds = env.sizes["serving_audio_s"]
    speech = demo_speech(seconds)
    chunk = 3200  # 0.2 s at 16 kHz, pushed every 0.2 s (the first 0.4 s at once)
    expected = math.ceil(seconds * 25)
    r["config"] = {"audio_s": seconds, "push": "0.2 s chunks in real time after 0.4 s up front",
                   "sessions": list(env.sizes["serving_sessions"]), "frame": [env.sizes["portrait"]] * 2,
                   "backend": dev.backend,
                   "sustained_when": "every session got all its frames and at most 1 % of them late"}
    trials: dict = {}
    r["trials"] = trials
    sustained = 0
    per_session = None
    for n in env.sizes["serving_sessions"]:
        need = seconds + (6 if env.rehearse else 10)

        def trial(n=n):
            max_batch = min(32, max(8, n))
            if env.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            base = env.mem_gib()
            with SessionEngine(dev, max_sessions=n, max_batch=max_batch) as engine:
                aid = engine.add_avatar(portrait)
                after_avatar = env.mem_gib()
                sessions = [engine.open(aid, seed=i) for i in range(n)]
                counts = [0] * n
                errors: list[str] = []

                def feed(s):
                    try:
                        t0 = time.perf_counter()
                        s.push(speech[:2 * chunk])
                        for k, start in enumerate(range(2 * chunk, len(speech), chunk)):
                            delay = t0 + (k + 1) * 0.2 - time.perf_counter()
                            if delay > 0:
                                time.sleep(delay)
                            s.push(speech[start:start + chunk])
                        s.end()
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"push: {type(exc).__name__}: {exc}"[:200])

                def take(i, s):
                    try:
                        for _ in s.frames(timeout=60):
                            counts[i] += 1
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"frames: {type(exc).__name__}: {exc}"[:200])

                threads = [threading.Thread(target=feed, args=(s,), daemon=True) for s in sessions]
                threads += [threading.Thread(target=take, args=(i, s), daemon=True) for i, s in enumerate(sessions)]
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=seconds + 120)
                wall = time.perf_counter() - started
                stats = [s.stats_dict() for s in sessions]
                metrics = engine.metrics()
                peak = env.mem_gib(peak=True)
            late = [int(s.get("late_frames") or 0) for s in stats]
            firsts = [s.get("first_frame_latency_s") for s in stats if s.get("first_frame_latency_s") is not None]
            ok = not errors and all(c >= expected for c in counts) and all(x <= max(1, 0.01 * expected) for x in late)
            e = {"sessions": n, "max_batch": max_batch, "wall_s": round(wall, 2), "frames_min": min(counts),
                 "frames_expected": expected, "late_frames_max": max(late), "late_frames_total": sum(late),
                 "max_lateness_s": round(max(float(s.get("max_lateness_s") or 0) for s in stats), 4),
                 "first_frame_latency_s": {"median": round(float(np.median(firsts)), 4) if firsts else None,
                                           "max": round(max(firsts), 4) if firsts else None},
                 "idle_seconds_max": max(float(s.get("idle_seconds") or 0) for s in stats),
                 "aggregate_frames_per_s": round(sum(counts) / wall, 1), "batches": metrics.get("batches_total"),
                 "sustained_25fps": ok, "errors": errors[:5]}
            if env.cuda:
                e["memory_gib"] = {"before": base, "after_avatar": after_avatar, "peak": peak,
                                   "peak_per_session": round((peak - after_avatar) / n, 4)}
            else:
                e["memory_gib"] = check.skip(f"serving.trials.n{n}.memory_gib", "no CUDA: no device memory to count")
            return e

        result = check.item(trials, f"n{n}", trial, "serving.trials", need_s=need)
        if not isinstance(result, dict) or "sustained_25fps" not in result:
            break
        if result["sustained_25fps"]:
            sustained = n
            if isinstance(result.get("memory_gib"), dict) and "peak_per_session" in result["memory_gib"]:
                per_session = result["memory_gib"]["peak_per_session"]
        else:
            break  # the next N would not be sustained either
    r["sessions_sustained_at_25fps"] = sustained
    r["memory_per_session_gib"] = per_session if per_session is not None else check.skip(
        "serving.memory_per_session_gib", "no CUDA" if not env.cuda else "no sustained trial measured it")


# -- main --------------------------------------------------------------------------------------

def summarize(check: Check) -> None:
    s = check.doc["sections"]
    res = lambda name: s.get(name, {}).get("results", {})  # noqa: E731
    summary = {name: s[name]["status"] for name in SECTIONS if name in s}
    summary["fp32_within_tolerance"] = res("correctness_fp32").get("within_tolerance")
    summary["fp16_within_tolerance"] = res("correctness_fp16").get("within_tolerance")
    summary["best_frames_only"] = res("offline").get("best_frames_only")
    summary["best_tflops"] = res("tflops").get("best_tflops")
    summary["sessions_sustained_at_25fps"] = res("serving").get("sessions_sustained_at_25fps")
    summary["first_frame_s"] = {k: v.get("median_s") for k, v in res("online").get("first_frame_s", {}).items()
                                if isinstance(v, dict)}
    check.doc["summary"] = summary
    check.doc["shape_problems"] = shape_problems(check.doc)
    check.doc["errors"] = errors_in(check.doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--rehearse", action="store_true", help="CPU, small sizes (implied without CUDA)")
    p.add_argument("--deadline", type=float, default=0.0, help="Unix time by which the run must end")
    p.add_argument("--budget", type=float, default=420.0, help="seconds, when no --deadline is given")
    p.add_argument("--install-json", default="", help="bench/gpu_check.sh's install record")
    p.add_argument("--tree", default="", help="an existing checkpoint tree instead of writing one")
    p.add_argument("--only", nargs="*", default=None, help="run these sections only (the rest: skipped)")
    p.add_argument("--force-cpu", action="store_true", help="ignore CUDA (rehearse on a GPU machine)")
    args = p.parse_args(argv)
    if args.force_cpu:
        args.rehearse = True
    check = Check(args)
    check.watchdog(grace_s=20.0)
    check.save()
    env = Env(check)
    if not env.cuda and not args.rehearse:
        check.doc["mode"] = "rehearsal"
        check.doc["note"] = "no CUDA device: ran as a rehearsal"
    on = env.device
    rec_box: dict = {}
    # (name, estimate s, limit s, body); estimates are what a GPU run needs, small in a rehearsal.
    plan = [
        ("machine", 5, 60, lambda r: s_machine(env, r)),
        ("install", 1, 10, lambda r: s_install(env, r)),
        ("tree", 20, 120, lambda r: s_tree(env, r)),
        ("kernels", 15, 90, lambda r: s_kernels(env, r)),
        ("correctness_fp32", 40, 150, lambda r: correctness(env, r, rec_box, fp32=True)),
        ("correctness_fp16", 20, 90, lambda r: correctness(env, r, rec_box, fp32=False)),
        ("cuda_graphs", 15, 60, lambda r: s_cuda_graphs(env, r)),
        ("tflops", 15, 60, lambda r: s_tflops(env, r)),
        ("offline", 60, 170, lambda r: s_offline(env, r)),
        ("online", 15, 60, lambda r: s_online(env, r)),
        ("serving", 25, 120, lambda r: s_serving(env, r)),
    ]
    scale = 0.2 if env.rehearse else 1.0
    for name, estimate, limit, body in plan:
        if name != "tree" and env.tree is None and name not in ("machine", "install", "kernels"):
            entry = {"status": "skipped", "on": on, "seconds": 0.0, "results": {},
                     "reason": "no checkpoint tree (the tree section did not finish)"}
            check.doc["sections"][name] = entry
            check.skip(name, entry["reason"])
            check.save()
            continue
        check.run_section(name, estimate * scale, limit, body, on)
        if name == "correctness_fp16":
            env.drop_renderers()  # the fp32 device and CPU renderers are no longer needed
    summarize(check)
    check.doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    check.save()
    shutil.rmtree(env.scratch, ignore_errors=True)
    log(f"wrote {check.out}: " + json.dumps(check.doc["summary"], default=str))
    if check.doc["shape_problems"]:
        log("shape problems: " + "; ".join(check.doc["shape_problems"]))
    return 0 if not check.doc["shape_problems"] else 2


if __name__ == "__main__":
    # The Triton kernels on a CPU: their interpreter, chosen before anything imports triton.
    if "TRITON_INTERPRET" not in os.environ:
        cpu_only = "--force-cpu" in sys.argv
        if not cpu_only:
            import torch

            cpu_only = not torch.cuda.is_available()
        if cpu_only:
            os.environ["TRITON_INTERPRET"] = "1"
    sys.exit(main())

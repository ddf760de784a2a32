"""TensorRT backend: engines built from an ONNX export folder, cached beside it, run without torch.

NOT EXECUTED in this project's CI: TensorRT cannot be installed on the development machines
(no PyPI wheels; the lent GPUs have no TensorRT either). This module is written against the
documented TensorRT 10 / 11 Python API; the pure parts (cache keys, rebuild decisions,
precision plans) live in ``engine_cache`` and are tested everywhere. See docs/deploy.md.

Build: ``trt.Builder`` + ``OnnxParser`` over the ONNX file, one optimization profile per graph
(batch 1..max_batch; T 1..max_frames with opt = the trained length), a persistent timing cache
(``engines/<name>/timing.cache``), a workspace limit, and the precision plan of
``engine_cache.precision_plan`` (TensorRT 10: BuilderFlag FP16 / INT8 + entropy calibration
from real frames; TensorRT 11: strongly typed, precision from the ONNX).

Run: I/O by tensor name (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``),
device and pinned host buffers allocated once at the profile's max shape (cuda-python if
installed, else torch CUDA), one CUDA stream, no allocation per call.
"""
from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument
from . import engine_cache as ec
from .artifacts import GRAPHS, read_export_manifest
from .base import Encoder

log = logging.getLogger(__name__)


class TensorRTUnavailable(GeolocError):
    """TensorRT (or a CUDA GPU) is not available here."""


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed (the `tensorrt` Python module is missing). On a Jetson it comes with "
            "JetPack (python3-libnvinfer); on a desktop GPU install NVIDIA's TensorRT. Meanwhile use "
            "--backend onnxruntime or torch.") from exc
    return trt


# ---- CUDA memory: cuda-python first (no torch on the vehicle), torch CUDA otherwise ------------

class _CudaPython:
    """Device/pinned buffers, copies and one stream through cuda-python's runtime bindings."""

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self.rt = cudart
        self.stream = self._ok(cudart.cudaStreamCreate())
        self._allocs: List[Any] = []

    def _ok(self, res):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise GeolocError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_info(self) -> Dict[str, Any]:
        props = self._ok(self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return {"gpu_name": name, "major": props.major, "minor": props.minor}

    def device(self, nbytes: int) -> int:
        ptr = self._ok(self.rt.cudaMalloc(nbytes))
        self._allocs.append(("d", ptr))
        return int(ptr)

    def pinned(self, shape, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._ok(self.rt.cudaMallocHost(nbytes))
        self._allocs.append(("h", ptr))
        buf = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def h2d(self, dst: int, src: np.ndarray, nbytes: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, dst: np.ndarray, src: int, nbytes: int) -> None:
        self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, nbytes,
                                         self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.stream))

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def close(self) -> None:
        for kind, ptr in self._allocs:
            (self.rt.cudaFree if kind == "d" else self.rt.cudaFreeHost)(ptr)
        self._allocs.clear()


class _TorchCuda:
    """The same through torch CUDA tensors (when cuda-python is not installed): buffers are torch
    tensors kept by address, copies are ``copy_(non_blocking=True)`` on the one stream."""

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise TensorRTUnavailable("no CUDA device visible to torch")
        self.torch = torch
        self._stream = torch.cuda.Stream()
        self._dev: Dict[int, Any] = {}
        self._host: List[Any] = []

    def device_info(self) -> Dict[str, Any]:
        p = self.torch.cuda.get_device_properties(0)
        return {"gpu_name": p.name, "major": p.major, "minor": p.minor}

    def device(self, nbytes: int) -> int:
        t = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device="cuda")
        self._dev[int(t.data_ptr())] = t
        return int(t.data_ptr())

    def pinned(self, shape, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        t = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, pin_memory=True)
        self._host.append(t)
        return t.numpy()[:nbytes].view(dtype).reshape(shape)

    def _bytes(self, a: np.ndarray):
        return self.torch.from_numpy(a.reshape(-1).view(np.uint8))

    def h2d(self, dst: int, src: np.ndarray, nbytes: int) -> None:
        with self.torch.cuda.stream(self._stream):
            self._dev[dst][:nbytes].copy_(self._bytes(src)[:nbytes], non_blocking=True)

    def d2h(self, dst: np.ndarray, src: int, nbytes: int) -> None:
        with self.torch.cuda.stream(self._stream):
            self._bytes(dst)[:nbytes].copy_(self._dev[src][:nbytes], non_blocking=True)

    def sync(self) -> None:
        self._stream.synchronize()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.cuda_stream)

    def close(self) -> None:
        self._dev.clear()
        self._host.clear()


def cuda_memory():
    """cuda-python if importable (keeps torch off the vehicle), else torch CUDA."""
    try:
        return _CudaPython()
    except ImportError:
        pass
    try:
        return _TorchCuda()
    except ImportError as exc:
        raise TensorRTUnavailable("the TensorRT backend needs cuda-python (pip install cuda-python) or torch with "
                                  "CUDA for its buffers") from exc


def trt_environment(trt, mem) -> Dict[str, str]:
    info = mem.device_info()
    return {"trt_version": trt.__version__, "gpu_name": info["gpu_name"],
            "compute_capability": ec.compute_capability_tag(info["major"], info["minor"])}


# ---- build -------------------------------------------------------------------------------------

def _int8_calibrator(trt, mem, batches: Sequence[Dict[str, np.ndarray]], cache_path: Path):
    """Entropy calibrator (TensorRT 10) over real pre-processed frames; caches its table."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches = list(batches)
            self.i = 0
            first = self.batches[0]
            self.bs = int(next(iter(first.values())).shape[0])
            self.dev = {k: mem.device(v.nbytes) for k, v in first.items()}

        def get_batch_size(self):
            return self.bs

        def get_batch(self, names):
            if self.i >= len(self.batches):
                return None
            b = self.batches[self.i]
            self.i += 1
            for k in names:
                a = np.ascontiguousarray(b[k])
                mem.h2d(self.dev[k], a, a.nbytes)
            mem.sync()
            return [self.dev[k] for k in names]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            cache_path.write_bytes(bytes(cache))

    return Calibrator()


def build_engine(trt, onnx_path: Path, key: ec.EngineKey, plan: ec.PrecisionPlan, *, workspace_mb: int,
                 timing_cache: Optional[Path], calibrator=None) -> bytes:
    """Parse ``onnx_path`` and build a serialized engine for ``key`` (raises GeolocError on failure)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11: networks are always strongly typed (no flag needed; the ONNX's types rule);
    # TensorRT 10: weakly typed, precision through BuilderFlag below
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise IncompatibleArtifact(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan.flags:
        if not hasattr(trt.BuilderFlag, name):
            raise InvalidArgument(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; export the ONNX in the "
                                  f"precision you want (strongly typed build)")
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, (mn, opt, mx) in key.profile.items():
        profile.set_shape(name, tuple(mn), tuple(opt), tuple(mx))
    config.add_optimization_profile(profile)
    if plan.calibrate:
        if calibrator is None:
            raise InvalidArgument("INT8 needs calibration frames (pass --calibration-drive)")
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU is ignored, not fatal
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise GeolocError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    if cache is not None:
        tmp = timing_cache.with_name(timing_cache.name + ".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        tmp.replace(timing_cache)
    return bytes(serialized)


# ---- one engine of any graph: cached, rebuilt with a reason, built on first use -------------------

def obtain_engine(trt, runtime, key: ec.EngineKey, path: Path, plan: ec.PrecisionPlan, onnx_path: Path, *,
                  build: bool, force_rebuild: bool, workspace_mb: int, timing_cache: Optional[Path],
                  build_hint: str, calibrator_factory: Optional[Callable[[], Any]] = None,
                  extra: Optional[Mapping[str, Any]] = None):
    """The deserialized engine for ``key`` at ``path``: the cached one when its manifest matches
    (``ec.rebuild_decision``) and TensorRT can deserialize it, else built from ``onnx_path`` and
    written with its manifest. Returns (engine, the built log line or None when cached). The same
    for every graph family: the retrieval encoder's graphs and the metric pair's."""
    decision = ec.Decision(True, "--force rebuild") if force_rebuild else ec.rebuild_decision(key, path)
    if not decision.rebuild:
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        decision = ec.after_deserialize(engine, path)
        if not decision.rebuild:
            return engine, None
        log.warning(decision.reason)
    if not build:
        raise IncompatibleArtifact(f"no usable TensorRT engine for the {key.graph} graph ({decision.reason}); "
                                   f"build it with `{build_hint}`")
    log.warning(ec.build_log_line(key, decision.reason))
    calib = calibrator_factory() if (plan.calibrate and calibrator_factory is not None) else None
    t0 = time.perf_counter()
    blob = build_engine(trt, onnx_path, key, plan, workspace_mb=workspace_mb, timing_cache=timing_cache,
                        calibrator=calib)
    dt = time.perf_counter() - t0
    ec.write_engine(path, blob, key, build_seconds=dt,
                    extra={"onnx": str(onnx_path), "workspace_mb": workspace_mb, "plan": plan.note, **dict(extra or {})})
    line = ec.built_log_line(key, dt, path)
    log.info(line)
    engine = runtime.deserialize_cuda_engine(blob)
    if engine is None:
        raise GeolocError(f"TensorRT could not load the engine it just built ({path})")
    return engine, line


# ---- run ---------------------------------------------------------------------------------------

class TrtGraph:
    """One engine + execution context with fixed, preallocated I/O buffers (pinned host + device)
    at the profile's maximum shapes; the outputs' maximum shapes are asked from the engine with
    every input at its maximum, so any graph (fixed or dynamic spatial size, one or more outputs)
    runs through this class."""

    def __init__(self, trt, engine, mem, max_shapes: Mapping[str, Sequence[int]], outputs: Sequence[str]):
        self.trt, self.engine, self.mem = trt, engine, mem
        self.context = engine.create_execution_context()
        if self.context is None:
            raise GeolocError("TensorRT could not create an execution context (out of GPU memory?)")
        self.inputs = list(max_shapes)
        self.outputs = list(outputs)
        self.max_batch = int(next(iter(max_shapes.values()))[0])
        shapes: Dict[str, Tuple[int, ...]] = {n: tuple(int(d) for d in s) for n, s in max_shapes.items()}
        for name, shape in shapes.items():
            if not self.context.set_input_shape(name, shape):
                raise InvalidArgument(f"input {name} shape {shape} is outside the engine's profile")
        for o in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(o))
            if any(d < 0 for d in shape):
                raise GeolocError(f"TensorRT cannot bound the shape of output {o} ({shape})")
            shapes[o] = shape
        self.host: Dict[str, np.ndarray] = {}
        self.dev: Dict[str, int] = {}
        for name, shape in shapes.items():
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self.host[name] = mem.pinned(tuple(shape), dtype)
            self.dev[name] = mem.device(self.host[name].nbytes)
            self.context.set_tensor_address(name, self.dev[name])  # fixed addresses: set once

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        mem = self.mem
        for name, a in zip(self.inputs, arrays):
            h = self.host[name]
            a = np.asarray(a, dtype=h.dtype)
            flat = h.reshape(-1)[:a.size]
            flat[:] = a.reshape(-1)
            mem.h2d(self.dev[name], flat, a.nbytes)
            if not self.context.set_input_shape(name, tuple(a.shape)):
                raise InvalidArgument(f"input {name} shape {a.shape} is outside the engine's profile")
        shapes = [tuple(self.context.get_tensor_shape(o)) for o in self.outputs]
        if not self.context.execute_async_v3(mem.stream_handle):
            raise GeolocError("TensorRT execute_async_v3 failed")
        outs = []
        for o, shape in zip(self.outputs, shapes):
            out = self.host[o].reshape(-1)[:int(np.prod(shape))]
            mem.d2h(out, self.dev[o], out.nbytes)
            outs.append((o, out, shape))
        mem.sync()
        return [out.reshape(shape).astype(np.float32, copy=True) for _, out, shape in outs]

    def __call__(self, *arrays: np.ndarray):
        outs = self.run(*arrays)
        return outs[0] if len(outs) == 1 else tuple(outs)


def parity_report(ref: Mapping[str, Sequence[np.ndarray]], got: Mapping[str, Sequence[np.ndarray]],
                  tolerance: Mapping[str, float], *, unit_vector_axis: int = 1) -> Dict[str, Any]:
    """Compare an engine's outputs with ONNX Runtime's on the same inputs (numpy only, so tested
    everywhere). ``ref``/``got``: output name -> list of arrays (one per parity input).
    ``tolerance``: "min_cos" (features: the smallest cosine between the two per-cell vectors along
    ``unit_vector_axis``) and/or "<output>_max_abs" per output. Shapes must agree and all be finite."""
    out: Dict[str, Any] = {"tolerance": dict(tolerance), "checks": []}
    passed = True
    worst_cos = 1.0
    for name in ref:
        for i, (r, g) in enumerate(zip(ref[name], got.get(name, []))):
            r, g = np.asarray(r, np.float64), np.asarray(g, np.float64)
            c: Dict[str, Any] = {"output": name, "input": i, "shape": list(r.shape)}
            if r.shape != g.shape or not np.isfinite(g).all():
                c.update(ok=False, why=f"shape {list(g.shape)} or non-finite values")
                passed = False
                out["checks"].append(c)
                continue
            c["max_abs"] = float(np.abs(r - g).max()) if r.size else 0.0
            ok = True
            lim = tolerance.get(f"{name}_max_abs")
            if lim is not None:
                ok &= c["max_abs"] <= lim
            if "min_cos" in tolerance and name == "features":
                num = (r * g).sum(axis=unit_vector_axis)
                nr, ng = np.linalg.norm(r, axis=unit_vector_axis), np.linalg.norm(g, axis=unit_vector_axis)
                cosv = np.where((nr < 1e-6) & (ng < 1e-6), 1.0, num / np.maximum(nr * ng, 1e-12))  # both zero: agree
                cos = float(np.min(cosv)) if cosv.size else 1.0
                c["min_cos"] = cos
                worst_cos = min(worst_cos, cos)
                ok &= cos >= tolerance["min_cos"]
            c["ok"] = bool(ok)
            passed &= bool(ok)
            out["checks"].append(c)
        if len(got.get(name, [])) != len(ref[name]):
            passed = False
            out["checks"].append({"output": name, "ok": False, "why": "missing outputs"})
    out["min_cos"] = worst_cos
    for name in ref:
        vals = [c["max_abs"] for c in out["checks"] if c.get("output") == name and "max_abs" in c]
        out[f"{name}_max_abs"] = max(vals) if vals else None
    out["passed"] = bool(passed and out["checks"])
    return out


class TensorRTEncoder(Encoder):
    backend = "tensorrt"

    def __init__(self, export_dir: Path, *, precision: str = "auto", engines_dir: Optional[Path] = None,
                 max_batch: int = 32, opt_frames: Optional[int] = None, workspace_mb: int = 1024,
                 build: bool = True, force_rebuild: bool = False,
                 calibration: Optional[Callable[[], Dict[str, List[np.ndarray]]]] = None,
                 expect_model: Optional[Mapping[str, Any]] = None):
        trt = import_tensorrt()
        export_dir = Path(export_dir)
        manifest = read_export_manifest(export_dir, verify=True, expect_model=expect_model)
        super().__init__(manifest)
        self.export_dir = export_dir
        self.engines_dir = Path(engines_dir) if engines_dir else export_dir
        self.mem = cuda_memory()
        env = trt_environment(trt, self.mem)
        plan = ec.precision_plan(env["trt_version"], precision, manifest["precision"])
        self.precision = plan.precision
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.graphs: Dict[str, TrtGraph] = {}
        self.build_log: List[str] = []
        for g, spec in ec.GRAPH_FAMILIES["encoder"].items():
            gplan = ec.plan_for_graph(env["trt_version"], precision, manifest["precision"], g,
                                      manifest["graphs"][g].get("precision", manifest["precision"]))
            profile = ec.profile_shapes(g, manifest["config"], max_batch=max_batch, opt_frames=opt_frames)
            key, path = ec.engine_plan(spec, manifest["graphs"][g]["sha256"], env, gplan, profile, self.engines_dir)

            def calib(g=g, path=path):
                if calibration is None:
                    raise InvalidArgument("INT8 engines need calibration frames")
                data = calibration()[g]
                return _int8_calibrator(trt, self.mem, [{GRAPHS[g]["inputs"][0]: b} for b in data],
                                        path.with_suffix(".calib"))

            engine, line = obtain_engine(trt, runtime, key, path, gplan, export_dir / spec.file, build=build,
                                         force_rebuild=force_rebuild, workspace_mb=workspace_mb,
                                         timing_cache=self.engines_dir / "timing.cache",
                                         build_hint=f"geoloc export engine --onnx {export_dir}",
                                         calibrator_factory=calib)
            if line:
                self.build_log.append(line)
            max_shapes = {n: s[2] for n, s in key.profile.items()}
            self.graphs[g] = TrtGraph(trt, engine, self.mem, max_shapes, spec.outputs)
        self.max_batch = max_batch
        self.detail = f"TensorRT {env['trt_version']}, {env['gpu_name']} {env['compute_capability']}, {self.precision}"

    def _batched(self, key: str, *arrays: np.ndarray) -> np.ndarray:
        n = len(arrays[0])
        outs = [self.graphs[key](*(a[i:i + self.max_batch] for a in arrays)) for i in range(0, n, self.max_batch)]
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _frames(self, x: np.ndarray) -> np.ndarray:
        return self._batched("frame", x)

    def _fuse(self, feats: np.ndarray, pad: np.ndarray) -> np.ndarray:
        return self._batched("temporal", feats, pad)

    def _aerial(self, x: np.ndarray) -> np.ndarray:
        return self._batched("aerial", x)

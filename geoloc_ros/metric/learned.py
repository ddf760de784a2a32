"""``LearnedFeatures``: the learned feature extractor of metric matching (``models.bevmatch``).

Same interface as ``features.GradientFeatures`` (registered as "learned")::

    feats, weight = fx.bev(bev_rgb [h, w, 3], valid [h, w], range_m [h, w])  # [h, w, C], [h, w]
    feats_a = fx.aerial(aerial_rgb [H, W, 3])                                # [H, W, C]

The features are unit vectors per cell that do not turn with the view (no ``rotate_channels``).
The weight is the BEV branch's per-cell confidence times the valid mask.

Backends: ``tensorrt`` builds engines of the export's two graphs on first use (cached beside the
ONNX in the export folder, keyed and rebuilt like the retrieval encoder's: ``inference.engine_cache``)
and checks them against ONNX Runtime on the export's parity inputs before use; ``onnxruntime`` runs
the export folder (``<engines_dir>/bevmatch/`` by default, made by ``inference.bevmatch_export``;
its manifest must name the checkpoint's weights and every graph's sha256 must match); ``torch``
runs the checkpoint. ``auto`` = TensorRT -> ONNX Runtime -> torch, like ``inference.select`` for
the encoder: each backend that cannot run is logged with why (``selection``), a named backend is
used or fails with the reason. With ``export_missing`` (default for the shipped pair; for another
checkpoint with $GEOLOC_AUTO_EXPORT=1) and torch installed, a missing export is made on the spot (a few
seconds, parity-checked; an export folder of other weights is never replaced). No torch import
at module level: the node runs the TensorRT and ONNX paths without torch.

TensorRT precision: ``auto`` builds fp16 (TensorRT 10) and keeps it when it passes parity, else
falls back to an fp32 engine with a warning; a named precision that fails parity is refused
(IncompatibleArtifact). The engines' optimization profile (h, w of the BEV mosaic and the aerial
window) follows the matching geometry (``pair_profiles``); an input outside it (a parameter
changed after the build) runs on ONNX Runtime for that call, counted and logged once.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..core.errors import GeolocError, IncompatibleArtifact, InvalidArgument
from .features import GradientFeatures, register_extractor

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "bevmatch.pt"
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")
#: engine vs ONNX Runtime on the parity inputs, per engine precision. Measured with torch on CPU,
#: every op in fp16 against fp32 (the shipped weights, the parity sizes and up to 433 x 433):
#: smallest per-cell cosine 0.99923, BEV weight max abs 0.093 (mean 1 over valid cells). TensorRT's
#: fp16 keeps reductions in fp32, so it should do better; fp32 engines may use TF32 (10-bit
#: mantissa) on Ampere and later, hence a tolerance near fp16's rather than ONNX Runtime's 1e-4.
ENGINE_TOLERANCE = {"fp16": {"min_cos": 0.995, "weight_max_abs": 0.25},
                    "fp32": {"min_cos": 0.999, "weight_max_abs": 0.1}}


def bev_input(bev_rgb: np.ndarray, valid: np.ndarray, range_m: np.ndarray) -> np.ndarray:
    """[1, 5, h, w] float32: R, G, B (0..255), valid, range (m), zero outside the valid cells."""
    v = np.asarray(valid, np.float32)
    rgb = np.asarray(bev_rgb, np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[:2] != v.shape or np.shape(range_m) != v.shape:
        raise InvalidArgument(f"BEV rgb {rgb.shape}, valid {v.shape}, range {np.shape(range_m)} do not agree")
    x = np.concatenate([rgb * v[..., None], v[..., None],
                        (np.minimum(np.asarray(range_m, np.float32), 1e3) * v)[..., None]], axis=2)
    return np.ascontiguousarray(x.transpose(2, 0, 1))[None]


def aerial_input(aerial_rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(aerial_rgb, np.float32)
    if a.ndim != 3 or a.shape[2] != 3:
        raise InvalidArgument(f"aerial window must be [H, W, 3] RGB, got {a.shape}")
    return np.ascontiguousarray(a.transpose(2, 0, 1))[None]


def default_export_dir(engines_dir: Optional[Union[str, Path]] = None, preset: str = "bevmatch") -> Path:
    base = Path(engines_dir) if engines_dir is not None else Path(os.environ.get("GEOLOC_ENGINES_DIR", "engines"))
    return base / preset


def pair_profiles(params=None, cover: Optional[Dict[str, list]] = None) -> Dict[str, Dict[str, List[List[int]]]]:
    """The TensorRT optimization profiles of the pair's graphs for the matching geometry of
    ``params`` (MetricParams or LocalizerConfig; default MetricParams()): the BEV mosaic from one
    view (h = BEV length) to the longest sequence mosaic (``matcher._fuse`` reaches back at most 4
    BEV lengths), the aerial window from the smallest translation window around the single-view
    canvas to the largest around the longest mosaic (``matcher.score``). Opt: a mosaic of two BEV
    lengths (the single view when ``metric_seq_len`` is 1 or fusion is single) and its window at
    the smallest translation window. ``cover``: graph -> [(h, w)] that must fit (the parity inputs)."""
    import math

    from ..inference import engine_cache as ec
    from ..inference.bevmatch_artifacts import GRAPHS
    from .bev import BevGrid
    from .config import MetricParams
    from .correlate import canvas_for

    p = params if params is not None else MetricParams()
    g = BevGrid(p.metric_res_m, p.metric_bev_x_min_m, p.metric_bev_x_max_m, p.metric_bev_y_half_m)
    length = p.metric_bev_x_max_m - p.metric_bev_x_min_m
    multi = p.metric_seq_len > 1 and p.metric_fusion != "single"
    g_opt = g.extended(length) if multi else g
    g_max = g.extended(4.0 * length) if multi else g

    def window(grid, half_m):
        side, _ = canvas_for(grid)
        half_px = int(math.ceil(half_m / p.metric_res_m)) + side // 2 + 2
        return (2 * half_px + 1, 2 * half_px + 1)

    hw = {"bev": (g_opt.shape, g_max.shape),
          "aerial": (window(g_opt, p.metric_window_min_m), window(g_max, p.metric_window_max_m))}
    cover = cover or {}
    return {k: ec.spatial_profile(ec.GRAPH_FAMILIES["bevmatch"][k], GRAPHS[k]["channels"], hw[k][0], hw[k][1],
                                  cover=cover.get(k, ()))
            for k in GRAPHS}


class _OrtRunner:
    backend = "onnxruntime"

    def __init__(self, export_dir: Path, fingerprint: Optional[str], threads: Optional[int]):
        import onnxruntime as ort

        from ..inference.bevmatch_artifacts import GRAPHS, read_bevmatch_export

        self.manifest = read_bevmatch_export(export_dir, verify=True, expect_fingerprint=fingerprint)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.sessions = {}
        for key, g in GRAPHS.items():
            path = Path(export_dir) / g["file"]
            try:
                self.sessions[key] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            except Exception as exc:  # ORT raises its own types
                raise IncompatibleArtifact(f"ONNX Runtime cannot load {path}: {exc}") from exc
            names = [i.name for i in self.sessions[key].get_inputs()]
            if names != g["inputs"]:
                raise IncompatibleArtifact(f"{path} has inputs {names}, expected {g['inputs']}")

    def bev(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        f, w = self.sessions["bev"].run(None, {"bev": x})
        return f[0], w[0, 0]

    def aerial(self, x: np.ndarray) -> np.ndarray:
        return self.sessions["aerial"].run(None, {"aerial": x})[0][0]


class _TrtRunner:
    """The pair on TensorRT engines (see the module doc); ``self.ort`` keeps the ONNX Runtime
    sessions the parity check ran against, for inputs outside the engines' profile."""

    backend = "tensorrt"

    def __init__(self, export_dir: Path, fingerprint: Optional[str], *, precision: str = "auto", params=None,
                 threads: Optional[int] = None, build: bool = True, force_rebuild: bool = False,
                 workspace_mb: int = 512):
        from ..inference import engine_cache as ec
        from ..inference import tensorrt_backend as tb
        from ..inference.bevmatch_artifacts import parity_inputs

        trt = tb.import_tensorrt()
        export_dir = Path(export_dir)
        try:
            self.ort = _OrtRunner(export_dir, fingerprint, threads)  # verifies the export and its sha256s
        except ImportError as exc:
            raise IncompatibleArtifact("the TensorRT engines of the learned pair are checked against ONNX Runtime "
                                       "before use, and onnxruntime is not installed (pip install onnxruntime)"
                                       ) from exc
        self.manifest = manifest = self.ort.manifest
        self.mem = tb.cuda_memory()
        env = tb.trt_environment(trt, self.mem)
        inputs = parity_inputs(manifest)
        self.profiles = pair_profiles(params, {k: [x.shape[2:] for x in v] for k, v in inputs.items()})
        ref = {"features": [], "weight": []}
        for x in inputs["bev"]:
            f, w = self.ort.sessions["bev"].run(None, {"bev": x})
            ref["features"].append(f)
            ref["weight"].append(w)
        ref_a = {"features": [self.ort.sessions["aerial"].run(None, {"aerial": x})[0] for x in inputs["aerial"]]}
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.build_log: List[str] = []
        self.parity: Dict = {}
        hint = f"geoloc export engine --onnx {export_dir}"
        if precision == "int8":
            raise InvalidArgument("INT8 is not available for the learned pair (no calibration path): use auto, fp16 "
                                  "or fp32")
        try:  # the pair's export is always fp32 (bevmatch_export)
            candidates = ec.precision_candidates(env["trt_version"], precision, "fp32")
        except InvalidArgument as exc:
            raise InvalidArgument(f"learned pair on TensorRT {env['trt_version']}: {exc}. Its ONNX export is fp32, "
                                  f"so this TensorRT builds it fp32: use precision auto or fp32") from None
        for i, prec in enumerate(candidates):
            graphs = {}
            for k, spec in ec.GRAPH_FAMILIES["bevmatch"].items():
                plan = ec.plan_for_graph(env["trt_version"], prec, "fp32", spec, "fp32")
                key, path = ec.engine_plan(spec, manifest["graphs"][k]["sha256"], env, plan, self.profiles[k],
                                           export_dir)
                engine, line = tb.obtain_engine(trt, runtime, key, path, plan, export_dir / spec.file, build=build,
                                                force_rebuild=force_rebuild, workspace_mb=workspace_mb,
                                                timing_cache=export_dir / "timing.cache", build_hint=hint)
                if line:
                    self.build_log.append(line)
                graphs[k] = tb.TrtGraph(trt, engine, self.mem, {n: s[2] for n, s in key.profile.items()},
                                        spec.outputs)
            tol = ENGINE_TOLERANCE[prec]
            got = {"features": [], "weight": []}
            for x in inputs["bev"]:
                f, w = graphs["bev"](x)
                got["features"].append(f)
                got["weight"].append(w)
            rb = tb.parity_report(ref, got, tol)
            ra = tb.parity_report(ref_a, {"features": [graphs["aerial"](x) for x in inputs["aerial"]]}, tol)
            self.parity = {"precision": prec, "passed": rb["passed"] and ra["passed"], "bev": rb, "aerial": ra}
            words = (f"{prec} engines vs ONNX Runtime on the export's parity inputs: smallest feature cosine "
                     f"{min(rb['min_cos'], ra['min_cos']):.5f} (>= {tol['min_cos']}), weight max abs "
                     f"{rb['weight_max_abs']:.2e} (<= {tol['weight_max_abs']})")
            if self.parity["passed"]:
                log.info("learned pair TensorRT parity passed: %s", words)
                self.graphs = graphs
                self.precision = prec
                break
            if i + 1 < len(candidates):
                log.warning("learned pair: %s fail; trying %s engines", words, candidates[i + 1])
                continue
            raise IncompatibleArtifact(f"TensorRT engines of {export_dir} fail their parity check: {words}. "
                                       f"Try --precision fp32 (or backend onnxruntime)")
        self.out_of_profile = 0
        self.detail = f"TensorRT {env['trt_version']}, {env['gpu_name']} {env['compute_capability']}, {self.precision}"

    def _fits(self, graph: str, x: np.ndarray) -> bool:
        from ..inference import engine_cache as ec

        name = next(iter(self.profiles[graph]))
        if ec.within_profile(self.profiles[graph], name, x.shape):
            return True
        self.out_of_profile += 1
        if self.out_of_profile == 1:
            log.warning("learned pair: %s input %s is outside the TensorRT profile %s (matching parameters "
                        "changed since the build?): running it on ONNX Runtime (counted in out_of_profile)",
                        graph, tuple(x.shape), self.profiles[graph][name])
        return False

    def bev(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if not self._fits("bev", x):
            return self.ort.bev(x)
        f, w = self.graphs["bev"](x)
        return f[0], w[0, 0]

    def aerial(self, x: np.ndarray) -> np.ndarray:
        if not self._fits("aerial", x):
            return self.ort.aerial(x)
        return self.graphs["aerial"](x)[0]


def build_pair_engines(export_dir: Union[str, Path], *, precision: str = "auto", metric_params=None,
                       force_rebuild: bool = False, workspace_mb: int = 512) -> "_TrtRunner":
    """Build (or reuse) and parity-check the TensorRT engines of the pair's export folder
    (``geoloc export engine --onnx engines/bevmatch``); returns the runner (``build_log``, ``parity``)."""
    return _TrtRunner(Path(export_dir), None, precision=precision, params=metric_params, build=True,
                      force_rebuild=force_rebuild, workspace_mb=workspace_mb)


class _TorchRunner:
    backend = "torch"

    def __init__(self, checkpoint: Path, threads: Optional[int]):
        import torch

        from ..models.bevmatch import load_bevmatch

        self.torch = torch
        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.manifest = load_bevmatch(checkpoint)

    def bev(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            f, w = self.model.encode_bev(self.torch.from_numpy(x))
        return f[0].numpy(), w[0].numpy()

    def aerial(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model.encode_aerial(self.torch.from_numpy(x))[0].numpy()


class LearnedFeatures:
    """See the module doc. ``checkpoint``: a bevmatch ``.pt`` (default: the shipped
    ``geoloc_ros/weights/bevmatch.pt``); ``export_dir``: its ONNX folder (default
    ``<engines_dir>/bevmatch``)."""

    name = "learned"
    version = 1

    def __init__(self, checkpoint: Optional[Union[str, Path]] = None, *, backend: str = "auto",
                 export_dir: Optional[Union[str, Path]] = None, engines_dir: Optional[Union[str, Path]] = None,
                 threads: Optional[int] = None, export_missing: Optional[bool] = None, precision: str = "auto",
                 metric_params=None, build_engines: bool = True, force_rebuild: bool = False,
                 workspace_mb: int = 512):
        if backend not in BACKENDS:
            raise InvalidArgument(f"learned features backend {backend!r} is not one of {', '.join(BACKENDS)}")
        from ..inference.bevmatch_artifacts import checkpoint_manifest

        self.checkpoint = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        ck = checkpoint_manifest(self.checkpoint)
        self.fingerprint = str(ck["fingerprint"])
        self.channels = int(ck["dim"])
        self.temperature = float(ck.get("temperature") or 0.1)
        # the localizer's volume temperature for these scores: chosen on validation drives and written into
        # the shipped checkpoint's manifest; a checkpoint without one gets the gradient features' value
        self.volume_temperature = float(ck.get("volume_temperature") or GradientFeatures.volume_temperature)
        # the posterior share the Localizer requires near the volume's peak (volume_min_posterior_at_peak -1);
        # 0.25 removed the one validation drive worse than GNSS+odometry (t8 worst 5.83 -> 3.26 m vs 5.50)
        self.min_posterior_at_peak = float(ck.get("min_posterior_at_peak", 0.25))
        self.export_dir = Path(export_dir) if export_dir is not None else default_export_dir(engines_dir, ck["preset"])
        if export_missing is None:  # the shipped pair's export is small and quick: make it on first use
            export_missing = os.environ.get("GEOLOC_AUTO_EXPORT", "") == "1" or \
                self.checkpoint.resolve() == DEFAULT_CHECKPOINT.resolve()
        order = AUTO_ORDER if backend == "auto" else (backend,)
        if export_missing and any(b in order for b in ("tensorrt", "onnxruntime")) and \
                not (self.export_dir / "manifest.json").is_file():
            try:
                from ..inference.bevmatch_export import export_bevmatch

                log.info("exporting %s to %s (ONNX, parity-checked)", self.checkpoint, self.export_dir)
                export_bevmatch(self.checkpoint, self.export_dir, force=True)
            except (GeolocError, ImportError, OSError) as exc:  # OSError: another process exported it first
                if backend != "auto":
                    raise
                log.warning("learned features: exporting to %s failed: %s", self.export_dir, exc)
        trt_kw = dict(precision=precision, params=metric_params, threads=threads, build=build_engines,
                      force_rebuild=force_rebuild, workspace_mb=workspace_mb)
        self.runner = None
        self.selection: List[Tuple[str, str]] = []
        for b in order:
            try:
                self.runner = self._open(b, threads, trt_kw)
            except (GeolocError, ImportError, OSError, RuntimeError) as exc:
                if backend != "auto":
                    raise
                self.selection.append((b, f"skipped: {exc}"))
                expected = b == "tensorrt" and isinstance(exc, ImportError) or "not installed" in str(exc)
                (log.info if expected else log.warning)("learned features backend %s skipped: %s", b, exc)
                continue
            self.selection.append((b, "selected"))
            break
        if self.runner is None:
            raise IncompatibleArtifact("no backend could run the learned features: "
                                       + "; ".join(f"{b} {w}" for b, w in self.selection))
        self.backend = self.runner.backend
        log.info("learned features: %s", self.describe())

    def _open(self, backend: str, threads: Optional[int], trt_kw: Dict):
        if backend == "tensorrt":
            try:
                return _TrtRunner(self.export_dir, self.fingerprint, **trt_kw)
            except GeolocError:  # TensorRTUnavailable (not installed, no GPU), IncompatibleArtifact, ...
                raise
            except Exception as exc:  # TensorRT raises RuntimeError/TypeError/...: report, never crash the node
                raise IncompatibleArtifact(f"TensorRT failed on {self.export_dir}: {type(exc).__name__}: {exc}"
                                           ) from exc
        if backend == "onnxruntime":
            return _OrtRunner(self.export_dir, self.fingerprint, threads)
        runner = _TorchRunner(self.checkpoint, threads)
        if runner.manifest["fingerprint"] != self.fingerprint:
            raise IncompatibleArtifact(f"{self.checkpoint} and its manifest {self.checkpoint.with_suffix('.json')} "
                                       f"name different weights")
        return runner

    def describe(self) -> str:
        """Which backend runs the pair, and why the ones before it were skipped."""
        detail = getattr(self.runner, "detail", "")
        skipped = [f"{b} {w}" for b, w in self.selection if w != "selected"]
        return (f"learned features {self.fingerprint[:12]} on {self.backend}" + (f" ({detail})" if detail else "")
                + (f"; {'; '.join(skipped)}" if skipped else ""))

    def identity(self) -> Dict:
        ident = {"name": self.name, "version": self.version, "fingerprint": self.fingerprint,
                 "channels": self.channels, "backend": self.backend}
        if self.backend == "tensorrt":
            ident["precision"] = self.runner.precision
        return ident

    def bev(self, bev_rgb: np.ndarray, valid: np.ndarray, range_m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        f, w = self.runner.bev(bev_input(bev_rgb, valid, range_m))
        return np.ascontiguousarray(f.transpose(1, 2, 0), dtype=np.float32), np.asarray(w, np.float32)

    def aerial(self, aerial_rgb: np.ndarray) -> np.ndarray:
        f = self.runner.aerial(aerial_input(aerial_rgb))
        return np.ascontiguousarray(f.transpose(1, 2, 0), dtype=np.float32)


register_extractor("learned", LearnedFeatures)

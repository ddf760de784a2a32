"""Export a checkpoint to an ONNX folder (three graphs + manifest) and check it against torch.

Graphs (see ``artifacts`` for names and shapes): the per-frame ground encoder (one backbone pass
per keyframe; the node caches its output), the temporal fusion over cached frame features with a
dynamic T in 1..max_frames and a key-padding mask, and the aerial encoder (perspective warp with
``grid_sample`` included). Exported with the dynamo exporter (``torch.onnx.export(dynamo=True)``):
the legacy TorchScript exporter bakes T into the transformer reshapes.

The wrappers below re-state the model's inference path without the data-dependent checks that a
graph cannot hold (``TemporalFusion`` refuses an all-padded sequence with a Python ``if``; the
``Encoder`` base class checks that before any backend runs) and with ``x.shape[0]`` instead of
``len(x)`` (which would freeze the batch size). The parity check run by ``export_onnx`` and the
tests compare them with the model's own methods, so they cannot drift silently.

Parity tolerance: descriptors are unit vectors compared by cosine similarity, and for unit
vectors |cos(a, c) - cos(b, c)| <= ||a - b||_2. So the check bounds the largest L2 distance
between an ONNX Runtime and a torch descriptor: that is the most any retrieval score can move.
fp32: 1e-4 (measured ~1e-6: only float summation order differs; 100x headroom for other CPUs'
kernels, still 3 orders of magnitude below the 0.1-0.3 spread of scores between nearby tiles
that the matcher relies on). fp16: 0.05 (measured ~0.02-0.03 with fp16 weights and
activations; below the score spread, and the fp16 export exists for TensorRT on a Jetson, where
the engine is checked again against this export). In an fp16 export only the two convolutional
encoders are fp16; the temporal graph stays fp32 (see export_onnx).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import GeolocError
from ..core.manifest import model_identity, sha256_file, write_json_atomic
from ..models.crossview import CrossViewModel
from ..models.temporal import TemporalFusion, masked_mean
from .artifacts import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, GRAPHS, MANIFEST_NAME
from .parity_inputs import ParityInputsLike, as_parity_inputs

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # LayerNormalization (17+) native; parsed by TensorRT 10 (JetPack 6) and 11
PARITY_TOLERANCE_L2 = {"fp32": 1e-4, "fp16": 5e-2}


class ExportFailed(GeolocError):
    """The exported graphs do not reproduce the torch model (parity check) or could not be written."""


# ---- graph wrappers ------------------------------------------------------------------------

def _image_path(branch, x: torch.Tensor) -> torch.Tensor:
    """Branch.trunk_features + from_trunk without the Python-side checks and mode switches."""
    x = (x - branch.mean) / branch.std
    if branch.grid is not None:
        x = F.grid_sample(x, branch.grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    if branch.trunk is not None:
        x = branch.trunk(x)
    return branch.from_trunk(x)


class FrameGraph(nn.Module):
    """images [B, 3, H, W] float32 in [0, 1] -> L2-normalised per-frame features [B, D] float32."""

    def __init__(self, model: CrossViewModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.branch, self.dtype = model.ground, dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(_image_path(self.branch, images.to(self.dtype)).float(), dim=-1)


class AerialGraph(FrameGraph):
    """tiles [B, 3, h, w] float32 in [0, 1] (heading-up) -> descriptors [B, D] float32."""

    def __init__(self, model: CrossViewModel, dtype: torch.dtype = torch.float32):
        super().__init__(model, dtype)
        self.branch = model.aerial


class TemporalGraph(nn.Module):
    """features [B, T, D] float32 (oldest..newest) + pad [B, T] bool (True = missing) -> [B, D].

    Same computation as ``TemporalFusion.forward`` / ``MeanFusion.forward`` minus the
    "no valid frame" check (done by ``Encoder.fuse`` before any backend runs)."""

    def __init__(self, model: CrossViewModel, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.temporal, self.dtype = model.temporal, dtype

    def forward(self, features: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = features.to(self.dtype)
        tf = self.temporal
        if not isinstance(tf, TemporalFusion):  # MeanFusion
            return F.normalize(masked_mean(x, pad).float(), dim=-1)
        T = x.shape[1]
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        pos = tf.pos[:, :T].flip(1)  # newest frame gets index 0
        y = tf.encoder(x + pos, src_key_padding_mask=pad)
        return F.normalize((tf.out(masked_mean(y, pad)) + masked_mean(x, pad)).float(), dim=-1)


def _sessions(out: Path, threads: int = 0) -> Dict[str, Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return {k: ort.InferenceSession(str(out / g["file"]), so, providers=["CPUExecutionProvider"])
            for k, g in GRAPHS.items()}


def parity_check(model: CrossViewModel, export_dir: Path, precision: str = "fp32", *, seed: int = 0,
                 frame_counts: Optional[Sequence[int]] = None, real: ParityInputsLike = None,
                 tolerance_l2: Optional[float] = None) -> Dict[str, Any]:
    """ONNX Runtime (CPU) vs the torch model on random and real inputs, at several T.

    ``real``: the real ground frames and aerial tiles (``parity_inputs.as_parity_inputs``: None is
    the shipped fixture; at least max(frame_counts) frames). Returns a report {"tolerance_l2",
    "max_l2", "passed", "checks": [...], "real_inputs"}; each check names the graph, the input kind,
    T and the largest L2 distance / abs difference between descriptors."""
    from .base import to_model_input

    cfg = model.cfg
    tol = PARITY_TOLERANCE_L2[precision] if tolerance_l2 is None else float(tolerance_l2)
    Tm = cfg.max_frames
    counts = sorted({t for t in (frame_counts or (1, 2, min(7, Tm), Tm)) if 1 <= t <= Tm})
    sess = _sessions(Path(export_dir))
    rng = np.random.default_rng(seed)
    checks: List[Dict[str, Any]] = []

    def record(graph: str, kind: str, T: Optional[int], got: np.ndarray, ref: np.ndarray) -> None:
        d = np.linalg.norm(got.astype(np.float64) - ref.astype(np.float64), axis=-1)
        checks.append({"graph": graph, "input": kind, "T": T, "n": int(len(d)), "max_l2": float(d.max()),
                       "max_abs": float(np.abs(got - ref).max()), "finite": bool(np.isfinite(got).all())})

    def run(key: str, *arrays: np.ndarray) -> np.ndarray:
        s = sess[key]
        return s.run(None, {i.name: a for i, a in zip(s.get_inputs(), arrays)})[0]

    real = as_parity_inputs(real)
    real.need_frames(max(counts))
    frames_real = to_model_input(real.frames[:max(counts)], cfg.ground_size)
    tiles_real = to_model_input(real.tiles, cfg.aerial_size)
    frames_rand = rng.random((3, 3, *cfg.ground_size), dtype=np.float32)
    tiles_rand = rng.random((2, 3, *cfg.aerial_size), dtype=np.float32)
    with torch.inference_mode():
        def t_frames(x):
            g = model.ground
            return model.frame_descriptors(g.trunk_features(torch.from_numpy(x)), len(x), 1)[:, 0].numpy()

        for kind, x in (("random", frames_rand), ("real", frames_real)):
            record("frame", kind, None, run("frame", x), t_frames(x))
        for kind, x in (("random", tiles_rand), ("real", tiles_real)):
            record("aerial", kind, None, run("aerial", x), model.encode_aerial(torch.from_numpy(x)).numpy())
        feats_real = t_frames(frames_real)
        for T in counts:
            # random unit features, batch of 3: no padding, the oldest frame missing, only the newest valid
            f = rng.standard_normal((3, T, cfg.dim)).astype(np.float32)
            f /= np.linalg.norm(f, axis=-1, keepdims=True)
            pad = np.zeros((3, T), bool)
            pad[1, 0] = T > 1
            pad[2, :T - 1] = True
            f[2, :T - 1] = np.nan if T > 1 else f[2, :T - 1]  # padded frames must not leak, even NaN
            ref = model.fuse(torch.from_numpy(f), torch.from_numpy(pad)).numpy()
            record("temporal", "random+pad", T, run("temporal", f, pad), ref)
            # the node's path on real frames: per-frame graph + temporal graph vs the whole torch model
            seq = frames_real[:T]
            whole = model.encode_ground(torch.from_numpy(seq)[None]).numpy()
            feats = run("frame", seq)[None]
            record("frame+temporal", "real", T, run("temporal", feats, np.zeros((1, T), bool)), whole)
            record("temporal", "real", T, run("temporal", feats_real[None, :T], np.zeros((1, T), bool)), whole)
    worst = max(c["max_l2"] for c in checks)
    passed = bool(worst <= tol and all(c["finite"] for c in checks))
    return {"tolerance_l2": tol, "max_l2": worst, "passed": passed, "frame_counts": counts, "checks": checks,
            "real_inputs": real.summary()}


# ---- the export --------------------------------------------------------------------------------

def _versions() -> Dict[str, str]:
    import onnx

    from .. import __version__

    v = {"geoloc_ros": __version__, "torch": torch.__version__, "onnx": onnx.__version__}
    for name in ("onnxscript", "onnxruntime"):
        try:
            v[name] = __import__(name).__version__
        except ImportError:
            v[name] = "not installed"
    return v


def _export_graph(module: nn.Module, args: Tuple[torch.Tensor, ...], path: Path, input_names: List[str],
                  output_name: str, dynamic_shapes, opset: int) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=True, input_names=input_names, output_names=[output_name],
                          dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False, verbose=False,
                          optimize=True)
    onnx.checker.check_model(str(path))


def _install(tmp: Path, out: Path) -> None:
    """Move the finished export ``tmp`` into place at ``out`` (replacing it: the caller checked --force)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_onnx(checkpoint: Path, out: Path, *, fp16: bool = False, force: bool = False, opset: int = DEFAULT_OPSET,
                parity: bool = True, parity_inputs: ParityInputsLike = None,
                command: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Export ``checkpoint`` to the folder ``out``; returns the manifest written there.

    ``parity_inputs``: the real frames and tiles of the parity check (None: the fixture shipped in
    ``weights/``; a saved .npz; a ``ParityInputs`` or (frames, tiles) of uint8 RGB arrays, e.g. from
    a bag or a dataset). Written into a hidden temporary folder beside ``out`` and renamed into
    place only after the parity check passed, so ``out`` never holds a half-written or failing
    export. Refuses to replace a non-empty ``out`` unless ``force``.
    """
    from tqdm import tqdm

    from ..core.outputs import check_output_dir
    from ..models.crossview import load_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out, force)
    t_start = time.perf_counter()
    real = as_parity_inputs(parity_inputs) if parity else None  # a bad file fails before the slow export
    model, ck_manifest = load_checkpoint(checkpoint)
    model = model.float().eval()
    cfg = model.cfg
    if real is not None:
        real.need_frames(cfg.max_frames)  # the parity check runs T up to max_frames
    precision = "fp16" if fp16 else "fp32"
    dtype = torch.float16 if fp16 else torch.float32
    graph_model = load_checkpoint(checkpoint)[0].to(dtype).eval() if fp16 else model
    Tm = cfg.max_frames
    D = cfg.dim
    Bdim = torch.export.Dim("B", min=1, max=4096)
    T_ex = min(Tm, 4)
    if Tm >= 2:
        Tdim = torch.export.Dim("T", min=1, max=Tm)
        t_shapes = {"features": {0: Bdim, 1: Tdim}, "pad": {0: Bdim, 1: Tdim}}
    else:  # a single-frame model has nothing dynamic in T
        t_shapes = {"features": {0: Bdim}, "pad": {0: Bdim}}
    specs = {
        "frame": (FrameGraph(graph_model, dtype), (torch.rand(2, 3, *cfg.ground_size),), ({0: Bdim},)),
        # the temporal graph stays fp32 in an fp16 export: it is tiny (T <= 8 tokens), fp16 buys nothing
        # there, and ONNX Runtime 1.32's CPU graph optimizer crashes (segfault) on its fp16 form
        "temporal": (TemporalGraph(model, torch.float32),
                     (F.normalize(torch.randn(2, T_ex, D), dim=-1), torch.zeros(2, T_ex, dtype=torch.bool)),
                     t_shapes),
        "aerial": (AerialGraph(graph_model, dtype), (torch.rand(2, 3, *cfg.aerial_size),), ({0: Bdim},)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX form; the plain path does
    onnx_loggers = [logging.getLogger(n)
                    for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in onnx_loggers]
    for lg in onnx_loggers:
        lg.setLevel(logging.ERROR)
    try:
        timings: Dict[str, float] = {}
        bar = tqdm(list(specs.items()), desc=f"export {cfg.name} ({precision})", unit="graph", disable=not progress)
        for key, (module, args, dyn) in bar:
            bar.set_postfix_str(GRAPHS[key]["file"])
            g = GRAPHS[key]
            t0 = time.perf_counter()
            _export_graph(module.eval(), args, tmp / g["file"], g["inputs"], g["output"], dyn, opset)
            timings[key] = round(time.perf_counter() - t0, 2)
        graphs = _graph_entries(tmp, cfg, precision)
        graphs["temporal"]["precision"] = "fp32"
        t0 = time.perf_counter()
        report = parity_check(model, tmp, precision, real=real) if parity else {"skipped": True}
        timings["parity"] = round(time.perf_counter() - t0, 2)
        if parity and not report["passed"]:
            worst = max(report["checks"], key=lambda c: c["max_l2"])
            raise ExportFailed(
                f"ONNX export of {checkpoint} failed its parity check: largest descriptor difference "
                f"{report['max_l2']:.3g} (L2) > tolerance {report['tolerance_l2']:.3g} in graph {worst['graph']} "
                f"({worst['input']} input, T={worst['T']}); nothing was written to {out}. Check the torch/onnx/"
                f"onnxruntime versions, or export fp32 if this was --fp16.")
        manifest = {
            "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
            "model": model_identity(ck_manifest), "config": cfg.to_dict(),
            "precision": precision, "opset": opset, "max_frames": Tm,
            "io_dtype": "float32", "preprocessing": "RGB uint8 -> resize to input size (bilinear) -> float32 / 255, "
                                                    "NCHW (geoloc_ros.inference.base.to_model_input); ImageNet "
                                                    "normalisation and the aerial perspective warp are in the graphs",
            "graphs": graphs, "parity": report,
            "checkpoint": {"path": str(checkpoint.resolve()), "sha256": sha256_file(checkpoint)},
            "versions": _versions(), "export_seconds": timings,
            "command": command or f"geoloc export onnx --checkpoint {checkpoint} --out {out}"
                                  + (" --fp16" if fp16 else ""),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
        _install(tmp, out)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for lg, lvl in zip(onnx_loggers, levels):
            lg.setLevel(lvl)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start
    size = sum(g["bytes"] for g in graphs.values())
    msg = (f"exported {cfg.name} ({precision}, opset {opset}) to {out}: 3 graphs, {size / 1e6:.1f} MB, "
           f"T 1..{Tm}, parity max L2 {report.get('max_l2', float('nan')):.2g} "
           f"(tolerance {report.get('tolerance_l2', float('nan')):.2g}) in {total:.0f} s")
    log.info(msg)
    if progress:
        print(msg)
    manifest["export_seconds"]["total"] = round(total, 1)
    write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def _graph_entries(folder: Path, cfg, precision: str) -> Dict[str, Any]:
    H, W = cfg.ground_size
    h, w = cfg.aerial_size
    D, Tm = cfg.dim, cfg.max_frames
    io = {
        "frame": ([("images", ["B", 3, H, W], "float32")], ("features", ["B", D], "float32")),
        "temporal": ([("features", ["B", "T", D], "float32"), ("pad", ["B", "T"], "bool")],
                     ("descriptor", ["B", D], "float32")),
        "aerial": ([("tiles", ["B", 3, h, w], "float32")], ("descriptor", ["B", D], "float32")),
    }
    entries = {}
    for key, g in GRAPHS.items():
        ins, o = io[key]
        p = folder / g["file"]
        entries[key] = {
            "file": g["file"], "sha256": sha256_file(p), "bytes": p.stat().st_size, "precision": precision,
            "inputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in ins],
            "outputs": [{"name": o[0], "shape": o[1], "dtype": o[2]}],
            "dynamic": {"B": [1, None]} | ({"T": [1, Tm]} if key == "temporal" else {}),
        }
    return entries

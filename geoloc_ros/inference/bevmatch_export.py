"""Export a bevmatch checkpoint to ONNX (two graphs with dynamic spatial sizes + manifest) and check
ONNX Runtime against torch on real-sized random inputs.

Parity tolerance: the features are unit vectors per cell: largest absolute difference 1e-4
(measured ~1e-5, summation order only). The weights are scaled to mean 1 over the valid cells (a
sum over the whole BEV inside the graph): largest absolute difference 1e-3, i.e. 1e-3 of the mean
weight (measured ~1e-4 on random inputs); the cosine score is a ratio of weighted sums, so a
relative weight error e moves it by O(e), far below the score differences the peak relies on.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ..core.errors import GeolocError
from ..core.manifest import sha256_file, write_json_atomic
from ..models.bevmatch import BevMatchModel, load_bevmatch
from .bevmatch_artifacts import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, GRAPHS, MANIFEST_NAME, PARITY_SEED, parity_inputs

DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-4  # features
WEIGHT_TOLERANCE = 1e-3  # BEV weights (mean 1 over valid cells)


class ExportFailed(GeolocError):
    """The exported graphs do not reproduce the torch model."""


class BevGraph(nn.Module):
    def __init__(self, model: BevMatchModel):
        super().__init__()
        self.model = model

    def forward(self, bev: torch.Tensor):
        f, w = self.model.encode_bev(bev)
        return f, w[:, None]


class AerialGraph(nn.Module):
    def __init__(self, model: BevMatchModel):
        super().__init__()
        self.model = model

    def forward(self, aerial: torch.Tensor):
        return self.model.encode_aerial(aerial)


def parity_check(model: BevMatchModel, export_dir: Path, tolerance: float = PARITY_TOLERANCE,
                 weight_tolerance: float = WEIGHT_TOLERANCE, seed: int = PARITY_SEED) -> Dict[str, Any]:
    """ONNX Runtime (CPU) vs torch at several spatial sizes (odd and even, BEV- and window-sized);
    the inputs are ``bevmatch_artifacts.parity_inputs`` (the TensorRT engines are checked on them too)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = {k: ort.InferenceSession(str(Path(export_dir) / g["file"]), so, providers=["CPUExecutionProvider"])
            for k, g in GRAPHS.items()}
    inputs = parity_inputs({"parity": {"seed": seed}})
    checks = []
    with torch.inference_mode():
        for key in ("bev", "aerial"):
            for x in inputs[key]:
                h, w = x.shape[2:]
                got = sess[key].run(None, {GRAPHS[key]["inputs"][0]: x})
                if key == "bev":
                    f, wt = model.encode_bev(torch.from_numpy(x))
                    ref = [f.numpy(), wt[:, None].numpy()]
                else:
                    ref = [model.encode_aerial(torch.from_numpy(x)).numpy()]
                ok = all(a.shape == b.shape for a, b in zip(got, ref)) and all(np.isfinite(a).all() for a in got)
                d = float(np.abs(got[0] - ref[0]).max()) if ok else float("inf")
                c = {"graph": key, "size": [h, w], "max_abs": d, "ok": bool(ok)}
                if key == "bev":
                    c["weight_max_abs"] = float(np.abs(got[1] - ref[1]).max()) if ok else float("inf")
                    c["ok"] = bool(ok and c["weight_max_abs"] <= weight_tolerance)
                checks.append(c)
    worst = max(c["max_abs"] for c in checks)
    return {"tolerance": tolerance, "weight_tolerance": weight_tolerance, "seed": seed, "max_abs": worst,
            "weight_max_abs": max(c.get("weight_max_abs", 0.0) for c in checks),
            "passed": bool(worst <= tolerance and all(c["ok"] for c in checks)), "checks": checks}


def export_bevmatch(checkpoint: Path, out: Path, *, force: bool = False, opset: int = DEFAULT_OPSET,
                    command: Optional[str] = None) -> Dict[str, Any]:
    """Export ``checkpoint`` to the folder ``out`` (written beside it, renamed into place after the
    parity check passed); returns the manifest."""
    import onnx

    from ..core.outputs import check_output_dir

    checkpoint, out = Path(checkpoint), Path(out)
    check_output_dir(out, force)
    t0 = time.perf_counter()
    model, ck = load_bevmatch(checkpoint)
    model = model.float().eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    H = torch.export.Dim("h", min=16, max=4096)
    W = torch.export.Dim("w", min=16, max=4096)
    specs = {"bev": (BevGraph(model), torch.rand(1, 5, 64, 60) * 40.0),
             "aerial": (AerialGraph(model), torch.rand(1, 3, 130, 128) * 255.0)}
    try:
        for key, (module, x) in specs.items():
            g = GRAPHS[key]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (x,), str(tmp / g["file"]), dynamo=True, input_names=g["inputs"],
                                  output_names=g["outputs"], dynamic_shapes=({2: H, 3: W},), opset_version=opset,
                                  external_data=False, verbose=False, optimize=True)
            onnx.checker.check_model(str(tmp / g["file"]))
        parity = parity_check(model, tmp)
        if not parity["passed"]:
            raise ExportFailed(f"bevmatch ONNX export of {checkpoint} fails the parity check: features max abs "
                               f"{parity['max_abs']:.2e} (tolerance {parity['tolerance']:.0e}), weights max abs "
                               f"{parity['weight_max_abs']:.2e} (tolerance {parity['weight_tolerance']:.0e}): "
                               f"{parity['checks']}")
        manifest = {
            "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
            "model": {"preset": ck["preset"], "fingerprint": ck["fingerprint"], "dim": ck["dim"]},
            "config": ck["config"], "temperature": ck.get("temperature"),
            "checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
            "graphs": {k: {"file": g["file"], "sha256": sha256_file(tmp / g["file"]), "inputs": g["inputs"],
                           "outputs": g["outputs"]} for k, g in GRAPHS.items()},
            "opset": opset, "parity": parity, "torch": torch.__version__, "onnx": onnx.__version__,
            "command": command, "export_s": round(time.perf_counter() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(tmp / MANIFEST_NAME, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest

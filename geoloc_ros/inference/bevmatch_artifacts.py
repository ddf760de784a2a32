"""The ONNX export folder of the learned metric features (stdlib only; no torch, no onnxruntime).

    bev_encoder.onnx     bev [1, 5, h, w] float32 (R, G, B 0..255, valid 0/1, range m)
                         -> features [1, C, h, w], weight [1, 1, h, w]
    aerial_encoder.onnx  aerial [1, 3, H, W] float32 (R, G, B 0..255) -> features [1, C, H, W]
    manifest.json        format, model identity (preset, fingerprint, dim = C), the checkpoint's
                         temperature, sha256 of each graph, the parity check the exporter ran

h, w, H, W are dynamic. Loaders verify every graph's sha256 and refuse a mismatch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..core.errors import IncompatibleArtifact
from ..core.manifest import model_identity, read_manifest, sha256_file

EXPORT_FORMAT = "geoloc-bevmatch-onnx"
EXPORT_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
GRAPHS: Dict[str, Dict[str, Any]] = {
    "bev": {"file": "bev_encoder.onnx", "inputs": ["bev"], "outputs": ["features", "weight"], "channels": 5},
    "aerial": {"file": "aerial_encoder.onnx", "inputs": ["aerial"], "outputs": ["features"], "channels": 3},
}
#: the spatial sizes (h, w) the exporter's parity check runs each graph at (odd and even, BEV- and
#: window-sized), in this order, all inputs drawn from one generator seeded with PARITY_SEED
PARITY_SIZES: Dict[str, List[Tuple[int, int]]] = {"bev": [(60, 60), (97, 61), (128, 60)],
                                                  "aerial": [(125, 125), (213, 200), (64, 90)]}
PARITY_SEED = 0


def export_hint(export_dir: Path, manifest: Optional[Dict[str, Any]] = None) -> str:
    ckpt = (manifest or {}).get("checkpoint", {}).get("path", "CHECKPOINT.pt")
    return (f"python -c \"from geoloc_ros.inference.bevmatch_export import export_bevmatch; "
            f"export_bevmatch('{ckpt}', '{export_dir}', force=True)\"")


def read_bevmatch_export(export_dir: Path, *, verify: bool = True,
                         expect_fingerprint: Optional[str] = None) -> Dict[str, Any]:
    """Read and check ``export_dir/manifest.json`` (and, with ``verify``, each graph's sha256)."""
    export_dir = Path(export_dir)
    m = read_manifest(export_dir / MANIFEST_NAME, EXPORT_FORMAT, EXPORT_FORMAT_VERSION,
                      what=f"bevmatch ONNX export {export_dir}", rebuild=f"re-export: {export_hint(export_dir)}")
    fix = export_hint(export_dir, m)
    ident = model_identity(m)
    if expect_fingerprint is not None and ident["fingerprint"] != expect_fingerprint:
        raise IncompatibleArtifact(f"bevmatch ONNX export {export_dir} was made from weights "
                                   f"{ident['fingerprint'][:12]}.., not the checkpoint's {expect_fingerprint[:12]}... "
                                   f"Re-export: {fix}")
    graphs = m.get("graphs")
    if not isinstance(graphs, dict) or set(graphs) != set(GRAPHS):
        raise IncompatibleArtifact(f"bevmatch ONNX export {export_dir}: manifest lists graphs {sorted(graphs or [])}, "
                                   f"expected {sorted(GRAPHS)}. Re-export: {fix}")
    if verify:
        for key, g in graphs.items():
            p = export_dir / GRAPHS[key]["file"]
            if not p.is_file():
                raise IncompatibleArtifact(f"bevmatch ONNX export {export_dir}: {p.name} is missing. Re-export: {fix}")
            digest = sha256_file(p)
            if digest != g.get("sha256"):
                raise IncompatibleArtifact(f"bevmatch ONNX export {export_dir}: {p.name} has sha256 {digest[:16]}.., "
                                           f"the manifest says {str(g.get('sha256'))[:16]}.. (corrupted or replaced "
                                           f"file). Re-export: {fix}")
    return m


def checkpoint_manifest(checkpoint: Path) -> Dict[str, Any]:
    """A bevmatch checkpoint's manifest from its ``.json`` sidecar (no torch)."""
    import json

    side = Path(checkpoint).with_suffix(".json")
    if not side.is_file():
        raise IncompatibleArtifact(f"bevmatch checkpoint {checkpoint} has no manifest {side.name} beside it")
    try:
        m = json.loads(side.read_text())
    except ValueError as exc:
        raise IncompatibleArtifact(f"{side} is not readable JSON ({exc})") from exc
    model_identity(m)
    return m


def parity_input(rng, h: int, w: int, graph: str):
    """One random input of ``graph`` at (h, w), as the exporter's parity check draws it: the BEV
    with ~70 % valid cells (RGB and range zero elsewhere), the aerial window plain RGB 0..255."""
    import numpy as np

    if graph != "bev":
        return (rng.random((1, 3, h, w)) * 255).astype(np.float32)
    valid = (rng.random((1, 1, h, w)) > 0.3).astype(np.float32)
    rgb = (rng.random((1, 3, h, w)) * 255).astype(np.float32) * valid
    rngm = (rng.random((1, 1, h, w)) * 40).astype(np.float32) * valid
    return np.concatenate([rgb, valid, rngm], axis=1)


def parity_inputs(manifest: Optional[Dict[str, Any]] = None) -> Dict[str, List[Any]]:
    """The export's parity inputs, regenerated (graph -> list of [1, C, h, w] arrays): the sizes
    and seed the export's manifest records (``parity.checks``, ``parity.seed``), else the defaults.
    What an engine of the pair is checked against ONNX Runtime on before it is used."""
    import numpy as np

    parity = (manifest or {}).get("parity") or {}
    sizes: Dict[str, List[Tuple[int, int]]] = {}
    for c in parity.get("checks") or []:
        if c.get("graph") in GRAPHS and isinstance(c.get("size"), list) and len(c["size"]) == 2:
            sizes.setdefault(c["graph"], []).append((int(c["size"][0]), int(c["size"][1])))
    if set(sizes) != set(GRAPHS):
        sizes = {k: list(v) for k, v in PARITY_SIZES.items()}
    rng = np.random.default_rng(int(parity.get("seed", PARITY_SEED)))
    return {g: [parity_input(rng, h, w, g) for h, w in sizes[g]] for g in ("bev", "aerial") if g in sizes}

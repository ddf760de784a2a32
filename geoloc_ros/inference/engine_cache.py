"""TensorRT engine cache: keys, file names, rebuild decisions, precision plans (pure, stdlib only).

An engine is valid only for one ONNX graph, one TensorRT version, one GPU architecture, one
precision and one optimization profile. Every engine ``<stem>.<sm_XY>.<precision>.engine`` is
written (atomically) with ``<same>.engine.json``: the key it was built for plus the sha256 of
the engine bytes. ``rebuild_decision`` compares the key wanted now with that manifest and says
whether to rebuild and why, in words. Nothing here imports tensorrt, so the logic is tested on
any machine; ``tensorrt_backend`` does the building and running.

Any exported graph goes through the same mechanism: a ``GraphSpec`` (name, ONNX file, tensor
names, engine file stem, whether INT8 applies) from ``GRAPH_FAMILIES`` -- the retrieval encoder's
three graphs (``artifacts.GRAPHS``) and the learned metric pair's two (``bevmatch_artifacts.GRAPHS``)
-- plus an optimization profile (input -> [min, opt, max] shapes), which is data: the encoder's
comes from its model config (``profile_shapes``: batch and T dynamic), the pair's from the
matching geometry (``spatial_profile``: h and w dynamic, batch 1). ``engine_plan`` turns a spec,
an ONNX sha256, the TensorRT/GPU environment, a precision plan and a profile into the key and
the file; everything after that (decision, build, manifest, run) does not know which model it is.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.manifest import read_manifest, sha256_file, write_json_atomic
from . import bevmatch_artifacts
from .artifacts import GRAPHS

ENGINE_FORMAT = "geoloc-trt-engine"
ENGINE_FORMAT_VERSION = 1
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
#: the fields of the key that make an engine unusable when they differ
KEY_FIELDS = ("format_version", "graph", "onnx_sha256", "trt_version", "compute_capability", "gpu_name",
              "precision", "profile")


@dataclass(frozen=True)
class GraphSpec:
    """One exported ONNX graph an engine can be built from."""
    name: str                      # the engine key's ``graph`` (unique over all families)
    family: str                    # "encoder" (retrieval) | "bevmatch" (learned metric pair)
    file: str                      # ONNX file name inside the export folder
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    engine_stem: str               # engine file: <engine_stem>.<sm_XY>.<precision>.engine
    int8: bool = True              # INT8 applies (convolutional); False: kept fp16 under an int8 request


def _family_specs() -> Dict[str, Dict[str, GraphSpec]]:
    enc = {k: GraphSpec(k, "encoder", g["file"], tuple(g["inputs"]), (g["output"],), Path(g["file"]).stem,
                        int8=(k != "temporal"))  # the temporal transformer stays fp16 (see graph_precision)
           for k, g in GRAPHS.items()}
    # the pair: no INT8 path (no calibration data pipeline for BEVs); names and engine files
    # prefixed so they never collide with the encoder's aerial graph in a shared engines folder
    pair = {k: GraphSpec(f"bevmatch_{k}", "bevmatch", g["file"], tuple(g["inputs"]), tuple(g["outputs"]),
                         f"bevmatch_{Path(g['file']).stem}", int8=False)
            for k, g in bevmatch_artifacts.GRAPHS.items()}
    return {"encoder": enc, "bevmatch": pair}


#: family -> graph key in its export -> spec
GRAPH_FAMILIES: Dict[str, Dict[str, GraphSpec]] = _family_specs()


def graph_spec(graph: Any, family: Optional[str] = None) -> GraphSpec:
    """A spec from itself, its engine-key name ("frame", "bevmatch_bev") or its key in ``family``'s export."""
    if isinstance(graph, GraphSpec):
        return graph
    fams = [family] if family else list(GRAPH_FAMILIES)
    for f in fams:
        if f not in GRAPH_FAMILIES:
            raise InvalidArgument(f"unknown graph family {f!r}; one of {', '.join(GRAPH_FAMILIES)}")
        specs = GRAPH_FAMILIES[f]
        if family and graph in specs:
            return specs[graph]
        for spec in specs.values():
            if spec.name == graph:
                return spec
    names = [s.name for f in fams for s in GRAPH_FAMILIES[f].values()]
    raise InvalidArgument(f"unknown graph {graph!r}; one of {', '.join(names)}")


@dataclass(frozen=True)
class PrecisionPlan:
    precision: str                 # what the engine computes in: fp32 | fp16 | int8
    strongly_typed: bool           # TensorRT 11+: types come from the ONNX, no precision flags
    flags: Tuple[str, ...] = ()    # BuilderFlag names to set (TensorRT 10)
    calibrate: bool = False        # INT8 post-training calibration from real frames (TensorRT 10)
    note: str = ""


@dataclass(frozen=True)
class EngineKey:
    graph: str
    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: Dict[str, List[List[int]]] = field(default_factory=dict)  # input -> [min, opt, max] shapes
    format_version: int = ENGINE_FORMAT_VERSION

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise InvalidArgument(f"cannot read a TensorRT version from {version!r}")


def compute_capability_tag(major: int, minor: int) -> str:
    """(8, 7) -> 'sm_87' (Jetson Orin); (9, 0) -> 'sm_90' (H100)."""
    return f"sm_{int(major)}{int(minor)}"


def precision_plan(trt_version: str, requested: str, onnx_precision: str) -> PrecisionPlan:
    """How to get ``requested`` precision out of an ONNX export of ``onnx_precision`` on this TensorRT.

    TensorRT 10.x (JetPack 6): weakly typed networks; BuilderFlag.FP16 / INT8 let the builder pick
    lower-precision kernels (INT8 needs calibration). TensorRT 11+ (JetPack 7) removed those flags:
    networks are strongly typed and the precision is the ONNX's, so fp16 needs an fp16 export and
    INT8 needs an explicitly quantized (Q/DQ) ONNX, which this project does not produce.
    """
    if requested == "auto":
        requested = "fp16" if (onnx_precision == "fp16" or trt_major(trt_version) < 11) else "fp32"
    if requested not in ENGINE_PRECISIONS:
        raise InvalidArgument(f"precision {requested!r} is not one of auto, {', '.join(ENGINE_PRECISIONS)}")
    if trt_major(trt_version) >= 11:
        if requested == "int8":
            raise InvalidArgument(f"TensorRT {trt_version} builds strongly typed networks: INT8 needs a Q/DQ "
                                  f"quantized ONNX, which `geoloc export onnx` does not make; use fp16 "
                                  f"(export with --fp16)")
        if requested != onnx_precision:
            raise InvalidArgument(f"TensorRT {trt_version} takes the precision from the ONNX ({onnx_precision}); "
                                  f"for {requested} re-export with `geoloc export onnx"
                                  f"{' --fp16' if requested == 'fp16' else ''}`")
        return PrecisionPlan(requested, True, (), False, "strongly typed: precision from the ONNX")
    if onnx_precision == "fp16" and requested == "fp32":
        raise InvalidArgument("an fp16 ONNX export cannot give an fp32 engine; export without --fp16")
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}[requested]
    return PrecisionPlan(requested, False, flags, requested == "int8",
                         "weakly typed: builder flags " + ("+".join(flags) or "none"))


def graph_precision(plan: PrecisionPlan, graph: Any) -> PrecisionPlan:
    """INT8 applies to the retrieval encoder's convolutional graphs only: the temporal transformer
    (LayerNorm, softmax over <= 8 frames, tiny) stays fp16, where calibration would buy nothing and
    lose accuracy; the metric pair has no calibration data path and stays fp16 too."""
    spec = graph_spec(graph)
    if plan.precision == "int8" and not spec.int8:
        return PrecisionPlan("fp16", False, ("FP16",), False, f"{spec.name} graph kept fp16 under int8")
    return plan


def plan_for_graph(trt_version: str, requested: str, export_precision: str, graph: str,
                   graph_onnx_precision: str) -> PrecisionPlan:
    """The precision plan of one graph of an export. The request is checked against the export's
    precision (``precision_plan``); then TensorRT 11+ takes each graph's own ONNX precision (an fp16
    export keeps its small temporal graph fp32) and TensorRT 10 applies ``graph_precision``."""
    plan = precision_plan(trt_version, requested, export_precision)
    if plan.strongly_typed:
        return PrecisionPlan(graph_onnx_precision, True, (), False,
                             f"strongly typed: {graph_onnx_precision} from the ONNX")
    return graph_precision(plan, graph)


def precision_candidates(trt_version: str, requested: str, onnx_precision: str) -> List[str]:
    """The engine precisions to try, in order, for a graph family checked by parity before use
    (the metric pair): ``auto`` on TensorRT 10 with an fp32 export -> fp16, then fp32 when the fp16
    engine fails its parity check; anything else -> the one precision of ``precision_plan``."""
    plan = precision_plan(trt_version, requested, onnx_precision)
    if requested == "auto" and not plan.strongly_typed and plan.precision == "fp16" and onnx_precision == "fp32":
        return ["fp16", "fp32"]
    return [plan.precision]


def profile_shapes(graph: str, config: Mapping[str, Any], *, max_batch: int, opt_batch: int = 1,
                   opt_frames: Optional[int] = None) -> Dict[str, List[List[int]]]:
    """Optimization profile [min, opt, max] per input of a retrieval encoder graph. T: min 1, opt
    ``opt_frames`` (default max_frames - 1, the trained length), max max_frames. Batch: 1,
    opt_batch, max_batch."""
    if graph not in GRAPHS:
        raise InvalidArgument(f"unknown graph {graph!r}; one of {', '.join(GRAPHS)}")
    if not (1 <= opt_batch <= max_batch):
        raise InvalidArgument(f"need 1 <= opt_batch ({opt_batch}) <= max_batch ({max_batch})")
    H, W = config["ground_size"]
    h, w = config["aerial_size"]
    D, Tm = int(config["dim"]), int(config["max_frames"])
    To = int(opt_frames) if opt_frames else max(1, Tm - 1)
    if not (1 <= To <= Tm):
        raise InvalidArgument(f"opt_frames {To} must be in 1..{Tm}")
    if graph == "frame":
        return {"images": [[1, 3, H, W], [opt_batch, 3, H, W], [max_batch, 3, H, W]]}
    if graph == "aerial":
        return {"tiles": [[1, 3, h, w], [opt_batch, 3, h, w], [max_batch, 3, h, w]]}
    return {"features": [[1, 1, D], [opt_batch, To, D], [max_batch, Tm, D]],
            "pad": [[1, 1], [opt_batch, To], [max_batch, Tm]]}


#: the smallest h, w of the pair's ONNX export (its dynamic dims start at 16)
SPATIAL_MIN = 16


def spatial_profile(graph: Any, channels: int, opt_hw: Sequence[int], max_hw: Sequence[int], *,
                    cover: Sequence[Sequence[int]] = (), min_hw: Sequence[int] = (SPATIAL_MIN, SPATIAL_MIN)
                    ) -> Dict[str, List[List[int]]]:
    """Optimization profile of a one-input image graph with dynamic h, w and batch 1 (the metric
    pair's): [1, channels, h, w] from ``min_hw`` through ``opt_hw`` to ``max_hw``, the maximum
    widened to hold every (h, w) in ``cover`` (the parity inputs must run through the engine)."""
    spec = graph_spec(graph)
    if len(spec.inputs) != 1:
        raise InvalidArgument(f"graph {spec.name} has inputs {spec.inputs}: a spatial profile takes one image input")
    mx = [max([int(max_hw[i])] + [int(c[i]) for c in cover]) for i in (0, 1)]
    mn = [max(int(min_hw[i]), SPATIAL_MIN) for i in (0, 1)]
    op = [min(max(int(opt_hw[i]), mn[i]), mx[i]) for i in (0, 1)]
    if any(mn[i] > mx[i] for i in (0, 1)):
        raise InvalidArgument(f"profile of {spec.name}: min {mn} exceeds max {mx}")
    c = int(channels)
    return {spec.inputs[0]: [[1, c, *mn], [1, c, *op], [1, c, *mx]]}


def within_profile(profile: Mapping[str, Sequence[Sequence[int]]], name: str, shape: Sequence[int]) -> bool:
    """Whether an input of ``shape`` fits the engine's profile for ``name`` (min <= shape <= max)."""
    if name not in profile:
        return False
    mn, _, mx = profile[name]
    return len(shape) == len(mn) and all(a <= int(s) <= b for a, s, b in zip(mn, shape, mx))


def engine_path(engines_dir: Path, graph: Any, compute_capability: str, precision: str) -> Path:
    """``<engines_dir>/<engine stem>.<sm_XY>.<precision>.engine``; ``graph``: a GraphSpec or its name."""
    stem = graph_spec(graph).engine_stem
    return Path(engines_dir) / f"{stem}.{compute_capability}.{precision}.engine"


def engine_plan(graph: Any, onnx_sha256: str, env: Mapping[str, str], plan: PrecisionPlan,
                profile: Mapping[str, List[List[int]]], engines_dir: Path) -> Tuple[EngineKey, Path]:
    """The key and the file of the engine of one graph: the one place where a graph of any family
    becomes an engine request. ``env``: trt_version, gpu_name, compute_capability."""
    spec = graph_spec(graph)
    for name in profile:
        if name not in spec.inputs:
            raise InvalidArgument(f"profile names input {name!r}, graph {spec.name} has {', '.join(spec.inputs)}")
    key = EngineKey(graph=spec.name, onnx_sha256=onnx_sha256, trt_version=env["trt_version"],
                    gpu_name=env["gpu_name"], compute_capability=env["compute_capability"], precision=plan.precision,
                    profile={k: [list(map(int, s)) for s in v] for k, v in profile.items()})
    return key, engine_path(engines_dir, spec, env["compute_capability"], plan.precision)


def manifest_path(engine: Path) -> Path:
    return Path(str(engine) + ".json")


@dataclass(frozen=True)
class Decision:
    rebuild: bool
    reason: str


def read_engine_manifest(engine: Path) -> Dict[str, Any]:
    """The manifest beside ``engine``, checked for format and version; IncompatibleArtifact otherwise."""
    return read_manifest(manifest_path(engine), ENGINE_FORMAT, ENGINE_FORMAT_VERSION,
                         what=f"TensorRT engine {Path(engine).name}",
                         rebuild="it is rebuilt on the next start (or by `geoloc export engine`)")


def compare_keys(expected: Mapping[str, Any], found: Mapping[str, Any]) -> List[str]:
    """Human-readable differences between two engine keys (empty: same)."""
    diffs = []
    for k in KEY_FIELDS:
        a, b = expected.get(k), found.get(k)
        if a != b:
            short = (lambda v: f"{v[:12]}.." if isinstance(v, str) and len(v) > 24 else v)
            diffs.append(f"{k} {short(b)!r} -> {short(a)!r}")
    return diffs


def rebuild_decision(expected: EngineKey, engine: Path, *, check_bytes: bool = True) -> Decision:
    """Whether the engine at ``engine`` can be used for ``expected``, and why not."""
    engine = Path(engine)
    if not engine.is_file():
        return Decision(True, f"no engine {engine.name} yet")
    if not manifest_path(engine).is_file():
        return Decision(True, f"{manifest_path(engine).name} is missing")
    try:
        m = read_engine_manifest(engine)
    except IncompatibleArtifact as exc:  # unreadable, another format or format version
        return Decision(True, str(exc))
    diffs = compare_keys(expected.to_dict(), m.get("key", {}))
    if diffs:
        return Decision(True, "built for another setup: " + "; ".join(diffs))
    if check_bytes and sha256_file(engine) != m.get("engine_sha256"):
        return Decision(True, f"{engine.name} does not match its manifest's sha256 (corrupted or truncated)")
    return Decision(False, "cached engine matches (TensorRT version, GPU, precision, ONNX, profile)")


def after_deserialize(engine_obj: Any, engine: Path) -> Decision:
    """``Runtime.deserialize_cuda_engine`` returns None for an engine it cannot use (another TensorRT
    build, another GPU, corrupted bytes that passed the checks): rebuild instead of crashing."""
    if engine_obj is None:
        return Decision(True, f"TensorRT could not deserialize {Path(engine).name} (other TensorRT build or GPU, "
                              f"or corrupted)")
    return Decision(False, "deserialized")


def write_engine(engine: Path, blob: bytes, key: EngineKey, *, build_seconds: float,
                 extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Write the engine and its manifest, each via temp file + rename (engine first: a manifest
    never points at a half-written engine, and a stale manifest fails the sha256 check)."""
    import hashlib
    import time

    engine = Path(engine)
    engine.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine.with_name(f".{engine.name}.tmp{os.getpid()}")
    tmp.write_bytes(bytes(blob))
    tmp.replace(engine)
    m = {"format": ENGINE_FORMAT, "format_version": ENGINE_FORMAT_VERSION, "key": key.to_dict(),
         "engine_sha256": hashlib.sha256(bytes(blob)).hexdigest(), "bytes": len(blob),
         "build_seconds": round(float(build_seconds), 1),
         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **dict(extra or {})}
    write_json_atomic(manifest_path(engine), m)
    return m


def build_log_line(key: EngineKey, reason: str) -> str:
    """What the node logs before a (slow) build, so nobody thinks it hung."""
    return (f"building TensorRT {key.trt_version} engine for the {key.graph} graph ({key.precision}, "
            f"{key.gpu_name} {key.compute_capability}) because {reason}; this takes about 1-10 minutes "
            f"(longest on a Jetson, shorter with a warm timing cache) and happens once per ONNX/TensorRT/GPU")


def built_log_line(key: EngineKey, seconds: float, path: Path) -> str:
    return f"built TensorRT engine {Path(path).name} ({key.graph}, {key.precision}) in {seconds:.0f} s"

"""Parameters of ``geoloc_node``: one table, validated before anything loads.

Two groups:

* node parameters (``NODE_PARAMS``): topics, model, backend, index, queues, frames, outputs;
* ``localizer.<field>``: one per field of ``pipeline.LocalizerConfig``, derived from the
  dataclass (default, type; description and range from the field ``metadata``: ``help`` or
  ``description``, ``range=(lo, hi)`` or ``min``/``max``, ``choices``).

``validate(values)`` is ROS-free (unit-testable): unknown names, wrong types, values out of range
or not among the choices are all reported together in one ``InvalidArgument`` that names each
parameter and what it accepts. ``declare(node)`` reads the node's overrides (``--ros-args -p``,
``--params-file``), validates them with ``validate``, then declares every parameter with a
``ParameterDescriptor`` (description, ``FloatingPointRange``/``IntegerRange``, read-only: they are
read once at start) holding the validated value. Works with rclpy from ROS 2 Humble onwards.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..core.errors import InvalidArgument

NODE_NAME = "geoloc_node"
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
# parameters every rclpy node may get that are not ours
ALLOWED_FOREIGN = ("use_sim_time", "start_type_description_service")
ALLOWED_FOREIGN_PREFIXES = ("qos_overrides.",)
LOCALIZER_PREFIX = "localizer."


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any  # bool | int | float | str | list
    description: str
    lo: Optional[float] = None  # inclusive bounds for numbers
    hi: Optional[float] = None
    choices: Optional[Tuple[str, ...]] = None

    @property
    def kind(self) -> type:
        d = self.default
        if isinstance(d, bool):
            return bool
        if isinstance(d, int):
            return int
        if isinstance(d, float):
            return float
        if isinstance(d, str):
            return str
        if isinstance(d, (list, tuple)):
            return list
        raise TypeError(f"parameter {self.name}: unsupported default {d!r}")

    def constraint_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.lo is not None or self.hi is not None:
            lo = "-inf" if self.lo is None else f"{self.lo:g}"
            hi = "inf" if self.hi is None else f"{self.hi:g}"
            return f"{self.kind.__name__} in [{lo}, {hi}]"
        return self.kind.__name__


P = ParamSpec
NODE_PARAMS: List[ParamSpec] = [
    P("image_topic", "/camera/image_raw", "camera topic (sensor_msgs/Image; with compressed:=true the node "
      "subscribes IMAGE_TOPIC/compressed, image_transport naming)"),
    P("compressed", False, "subscribe sensor_msgs/CompressedImage (jpeg/png) on IMAGE_TOPIC/compressed "
      "instead of raw sensor_msgs/Image"),
    P("fix_topic", "/gnss/fix", "GNSS prior (sensor_msgs/NavSatFix)"),
    P("odom_topic", "/odom", "odometry (nav_msgs/Odometry, any drifting odom frame); empty: no odometry"),
    P("input_reliability", "best_effort", "QoS reliability of the three input subscriptions (depth 5, volatile): "
      "best_effort (SENSOR_DATA: matches every publisher, latest data first) or reliable (only reliable "
      "publishers match; the transport retransmits what it lost)", choices=("best_effort", "reliable")),
    P("expected_image_hz", 0.0, "rate the camera is sent at, for the input.image.* loss figures; 0: learned "
      "from the stamps that arrive", 0.0, 1000.0),
    P("expected_fix_hz", 0.0, "rate the GNSS fixes are sent at; 0: learned from the stamps", 0.0, 1000.0),
    P("expected_odom_hz", 0.0, "rate the odometry is sent at; 0: learned from the stamps", 0.0, 10000.0),
    P("input_min_share", 0.9, "diagnostics warn when an input delivered less than this share of the messages "
      "its stamps show were sent, over the last input_window_s; 0: never", 0.0, 1.0),
    P("input_window_s", 10.0, "stamp time over which the received share of each input is judged (s)", 0.5, 3600.0),
    P("input_break_s", 10.0, "a stamp gap longer than this (an outage, a bag skipped ahead) or a stamp going back "
      "starts a new segment of an input: counted as a break, not as lost messages (s)", 0.1, 3600.0),
    P("model", "seqgeo_lite", "encoder: a preset name, a checkpoint .pt, or an engines/NAME/ folder "
      "(geoloc_ros.inference.load_encoder)"),
    P("backend", "auto", "inference backend; auto tries tensorrt, onnxruntime, torch in that order",
      choices=BACKENDS),
    P("engines_dir", "", "where ONNX exports and TensorRT engines of a preset are looked up and cached "
      "(engines/<preset>/); empty: $GEOLOC_ENGINES_DIR, else ./engines"),
    P("device", "cpu", "device for the torch backend (tensorrt always runs on the GPU)", choices=("cpu", "cuda")),
    P("encoder_threads", 0, "CPU threads of the encoder (torch / onnxruntime); 0: the backend's default", 0, 1024),
    P("index_path", "", "tile index folder (built by the same model with `geoloc index build`): retrieval, for "
      "global relocalisation (and the camera measurement when orthophoto is empty); required unless orthophoto "
      "is set"),
    P("orthophoto", "", "orthophoto (GeoTIFF in any CRS, or an XYZ tile folder) for metric matching, the camera's "
      "sub-metre measurement (docs/metric.md); empty: retrieval only"),
    P("metric_features", "gradient", "metric matching feature extractor", choices=("gradient", "learned")),
    P("camera_info_topic", "", "sensor_msgs/CameraInfo of the camera (K, D); empty: IMAGE_TOPIC's sibling "
      "camera_info"),
    P("camera_mount", [0.0, 0.0, 1.8, 0.0, 0.0, 0.0], "camera_link pose in base_frame: x, y, z (m), roll, pitch, "
      "yaw (deg; pitch > 0 looks down), used when /tf_static does not connect base_frame to the camera_info "
      "frame (with the pip ROS wheels there is no tf2_msgs: always this)"),
    P("memory_budget_mb", 512, "memory the tile index may use for loaded shards (MB)", 16, 1048576),
    P("image_queue_size", 2, "camera frames waiting for the worker; when full the oldest is dropped "
      "(counted as drops.image.queue_full)", 1, 1000),
    P("input_queue_size", 2000, "GNSS/odometry messages waiting for the worker (oldest dropped when full)",
      10, 1000000),
    P("publish_on_fix", True, "also publish the filter estimate at each GNSS fix, between camera keyframes"),
    P("publish_debug_image", True, "publish ~/debug_image (aerial crop, candidates heatmap, GNSS, estimate "
      "with covariance ellipse, path)"),
    P("debug_image_size_px", 400, "side of the square debug image (pixels)", 64, 4096),
    P("debug_crop_m", 200.0, "side of the area shown in the debug image (metres)", 10.0, 10000.0),
    P("debug_orthophoto", "", "GeoTIFF drawn under the debug image; empty: the index's orthophoto if its "
      "manifest names one, else a plain background"),
    P("map_frame", "map", "frame_id of the pose and path: local ENU-like frame of the index datum "
      "(UTM grid axes, origin at the index frame origin, see docs/ros.md)"),
    P("base_frame", "base_link", "frame_id of the corrected NavSatFix (the vehicle reference point)"),
    P("path_max_poses", 1000, "poses kept in ~/path", 1, 1000000),
    P("markers_top_k", 10, "candidates shown in ~/candidates (MarkerArray)", 0, 1000),
    P("diagnostics_period_s", 1.0, "period of /diagnostics (s)", 0.05, 60.0),
    P("stale_input_s", 3.0, "diagnostics warn when no camera frame or GNSS fix arrived for this long (s)",
      0.1, 3600.0),
    P("log_throttle_s", 5.0, "at most one log line per drop reason per this many seconds", 0.0, 3600.0),
]
del P


def _field_specs(cls, prefix: str) -> List[ParamSpec]:
    """ParamSpecs for the fields of a (possibly nested) config dataclass."""
    out: List[ParamSpec] = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_") or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            continue
        name = prefix + f.name
        md = dict(f.metadata or {})
        if dataclasses.is_dataclass(default):
            out.extend(_field_specs(type(default), name + "."))
            continue
        if default is None:  # ROS parameters have no None: skipped (the dataclass default applies)
            continue
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(default, list) and not default:
            continue  # an empty list has no ROS type
        desc = str(md.get("help") or md.get("description") or md.get("doc") or f"LocalizerConfig.{f.name}")
        rng = md.get("range")
        lo, hi = (rng if rng is not None else (md.get("min"), md.get("max")))
        choices = md.get("choices")
        out.append(ParamSpec(name, default, desc, None if lo is None else float(lo), None if hi is None else float(hi),
                             tuple(str(c) for c in choices) if choices else None))
    return out


def localizer_params() -> List[ParamSpec]:
    from ..pipeline import LocalizerConfig

    return _field_specs(LocalizerConfig, LOCALIZER_PREFIX)


def all_params() -> List[ParamSpec]:
    return NODE_PARAMS + localizer_params()


def _coerce(spec: ParamSpec, value: Any) -> Tuple[Any, Optional[str]]:
    """(value converted to the spec's type, problem or None)."""
    kind = spec.kind
    if hasattr(value, "tolist"):
        value = value.tolist()
    elif hasattr(value, "typecode"):  # array.array from rclpy
        value = list(value)
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        return value, f"must be true or false, got {value!r}"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"must be an integer, got {value!r}"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"must be a number, got {value!r}"
        value = float(value)
        if not math.isfinite(value):
            return value, f"must be finite, got {value!r}"
    elif kind is str:
        if not isinstance(value, str):
            return value, f"must be a string, got {value!r}"
    elif kind is list:
        if not isinstance(value, (list, tuple)):
            return value, f"must be a list like {spec.default!r}, got {value!r}"
        value = list(value)
        if isinstance(spec.default[0], float):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return value, f"must be a list of numbers, got {value!r}"
            value = [float(v) for v in value]
    if spec.choices and value not in spec.choices:
        return value, f"must be one of {', '.join(spec.choices)}, got {value!r}"
    if kind in (int, float):
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            return value, f"must be in [{spec.lo:g}, {spec.hi:g}], got {value!r}" if spec.lo is not None and \
                spec.hi is not None else f"out of range ({spec.constraint_text()}), got {value!r}"
    return value, None


def is_foreign(name: str) -> bool:
    return name in ALLOWED_FOREIGN or name.startswith(ALLOWED_FOREIGN_PREFIXES)


@dataclass(frozen=True)
class Settings:
    """Validated parameter values: ``node`` (name -> value) and the ``localizer`` config object."""

    node: Dict[str, Any]
    localizer: Any  # pipeline.LocalizerConfig
    values: Dict[str, Any]  # every parameter, flat (what gets declared)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.node[name]
        except KeyError:
            raise AttributeError(name) from None


def _build_localizer_config(values: Dict[str, Any]):
    from ..pipeline import LocalizerConfig

    def nested(cls, prefix):
        kw = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            name = prefix + f.name
            default = None
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(default):
                kw[f.name] = nested(type(default), name + ".")
            elif name in values:
                v = values[name]
                kw[f.name] = tuple(v) if isinstance(default, tuple) else v
        return cls(**kw)

    return nested(LocalizerConfig, LOCALIZER_PREFIX)


def validate(overrides: Dict[str, Any], specs: Optional[Sequence[ParamSpec]] = None,
             build_localizer: bool = True) -> Settings:
    """Check ``overrides`` (name -> value) against the table; return all values with defaults filled.

    Raises InvalidArgument listing every problem (unknown names with the closest known ones,
    wrong types, out-of-range values, bad choices, empty index_path, LocalizerConfig's own checks).
    """
    import difflib

    specs = list(all_params() if specs is None else specs)
    by_name = {s.name: s for s in specs}
    problems: List[str] = []
    values: Dict[str, Any] = {s.name: (list(s.default) if isinstance(s.default, list) else s.default) for s in specs}
    for name, value in overrides.items():
        if is_foreign(name):
            continue
        spec = by_name.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"unknown parameter '{name}'{hint}")
            continue
        v, err = _coerce(spec, value)
        if err:
            problems.append(f"parameter '{name}' {err}")
        else:
            values[name] = v
    if "index_path" in by_name and "orthophoto" in by_name and not str(values.get("index_path", "")).strip() \
            and not str(values.get("orthophoto", "")).strip():
        problems.append("set 'orthophoto' (metric matching: a GeoTIFF or XYZ folder of the area) and/or 'index_path' "
                        "(retrieval: a tile index folder built with `geoloc index build` for the same model)")
    loc = None
    if not problems and build_localizer and any(n.startswith(LOCALIZER_PREFIX) for n in by_name):
        try:
            loc = _build_localizer_config(values)
        except (ValueError, TypeError) as exc:
            problems.append(f"localizer parameters: {exc}")
    if problems:
        raise InvalidArgument(f"{NODE_NAME}: invalid parameters:\n  - " + "\n  - ".join(problems)
                              + "\nSee config/geoloc.yaml and docs/ros.md for every parameter and its range.")
    node_vals = {k: v for k, v in values.items() if not k.startswith(LOCALIZER_PREFIX)}
    return Settings(node=node_vals, localizer=loc, values=values)


def descriptor(spec: ParamSpec):
    """rcl_interfaces ParameterDescriptor for ``spec`` (description, range, read-only)."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(description=spec.description, read_only=True)
    extra = []
    if spec.kind is float and spec.lo is not None and spec.hi is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.lo), to_value=float(spec.hi), step=0.0)]
    elif spec.kind is int and spec.lo is not None and spec.hi is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.lo), to_value=int(spec.hi), step=1)]
    elif spec.lo is not None or spec.hi is not None:
        extra.append(spec.constraint_text())
    if spec.choices:
        extra.append(spec.constraint_text())
    d.additional_constraints = "; ".join(extra)
    return d


def node_overrides(node) -> Dict[str, Any]:
    """The parameter overrides given to ``node`` (command line ``-p``, ``--params-file``), name -> value."""
    ov = getattr(node, "_parameter_overrides", None) or {}
    return {name: p.value for name, p in ov.items()}


def declare(node, specs: Optional[Sequence[ParamSpec]] = None) -> Settings:
    """Validate the node's overrides, then declare every parameter with its validated value."""
    specs = list(all_params() if specs is None else specs)
    settings = validate(node_overrides(node), specs)
    for s in specs:
        node.declare_parameter(s.name, settings.values[s.name], descriptor(s), ignore_override=True)
    return settings


def yaml_defaults(specs: Optional[Sequence[ParamSpec]] = None) -> str:
    """The parameters file text with every parameter at its default (config/geoloc.yaml is this plus edits)."""
    import json

    specs = list(all_params() if specs is None else specs)
    lines = [f"{NODE_NAME}:", "  ros__parameters:"]
    for s in specs:
        lines.append(f"    # {s.description} ({s.constraint_text()})")
        v = s.default
        txt = ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)
        lines.append(f"    {s.name}: {txt}")
    return "\n".join(lines) + "\n"


def localizer_yaml_block(indent: int = 4) -> str:
    """The ``localizer:`` block of config/geoloc.yaml: every LocalizerConfig field, default, help, range."""
    import json

    pad = " " * indent
    lines = [f"{pad}localizer:"]
    for s in localizer_params():
        lines.append(f"{pad}  # {s.description} ({s.constraint_text()})")
        v = s.default
        if isinstance(v, bool):
            txt = "true" if v else "false"
        elif isinstance(v, float):
            txt = repr(v) if ("e" not in repr(v) and "inf" not in repr(v)) else f"{v:.10f}".rstrip("0")
        else:
            txt = json.dumps(v)
        lines.append(f"{pad}  {s.name[len(LOCALIZER_PREFIX):]}: {txt}")
    return "\n".join(lines) + "\n"


def update_yaml(path) -> None:
    """Rewrite the ``localizer:`` block at the end of a parameters file (after LocalizerConfig changes):
    ``python -m geoloc_ros.ros.params config/geoloc.yaml``."""
    from pathlib import Path

    path = Path(path)
    text = path.read_text()
    marker = "\n    localizer:\n"
    head = text.split(marker)[0].rstrip("\n") + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(head + localizer_yaml_block())
    tmp.replace(path)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m geoloc_ros.ros.params config/geoloc.yaml  (rewrites its localizer: block)")
    update_yaml(sys.argv[1])

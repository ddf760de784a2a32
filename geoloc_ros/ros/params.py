"""Parameters of ``geoloc_node``: the one schema (``core.config``) as ROS parameters and as
config/geoloc.yaml, validated before anything loads.

* node parameters (``NODE_PARAMS``, group ``node``): topics, model, backend, index, orthophoto,
  camera, queues, frames, outputs, diagnostics;
* ``localizer.<field>``: one per field of ``pipeline.LocalizerConfig`` (``core.config.params_of``:
  default and type, help, range or choices, group: localizer, filter, metric, retrieval).

``validate(values)`` is ROS-free (unit-testable): each value goes through ``Param.check`` (the one
validator, the config dataclasses use it too); unknown names, wrong types, values out of range or
not among the choices are all reported together in one ``InvalidArgument`` that names each
parameter and what it accepts. ``yaml_text()`` is config/geoloc.yaml.
``declare(node)`` reads the node's overrides (``--ros-args -p``,
``--params-file``), validates them with ``validate``, then declares every parameter with a
``ParameterDescriptor`` (description, ``FloatingPointRange``/``IntegerRange``, read-only: they are
read once at start) holding the validated value. Works with rclpy from ROS 2 Humble onwards.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from ..core.config import GROUPS, Param, params_of
from ..core.errors import InvalidArgument
from ..metric.config import DEFAULT_FEATURES, FEATURES

NODE_NAME = "geoloc_node"
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
# parameters every rclpy node may get that are not ours
ALLOWED_FOREIGN = ("use_sim_time", "start_type_description_service")
ALLOWED_FOREIGN_PREFIXES = ("qos_overrides.",)
LOCALIZER_PREFIX = "localizer."


ParamSpec = Param  # the schema's one parameter description (core.config)


def P(name, default, description, lo=None, hi=None, choices=None) -> Param:
    return Param(name, default, description, None if lo is None else float(lo), None if hi is None else float(hi),
                 tuple(choices) if choices else None, "node")


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
    P("metric_features", DEFAULT_FEATURES, "metric matching feature extractor", choices=FEATURES),
    P("camera_info_topic", "", "sensor_msgs/CameraInfo of the camera (K, D); empty: IMAGE_TOPIC's sibling "
      "camera_info"),
    P("camera_mount", [], "camera_link pose in base_frame: [x, y, z, roll, pitch, yaw] (m, deg; pitch > 0 looks "
      "down), used when /tf_static does not connect base_frame to the camera_info frame; empty: never guessed, "
      "metric matching waits for /tf_static, and without tf2_msgs (the pip ROS wheels) the node refuses to "
      "activate until it is set"),
    P("memory_budget_mb", 512, "memory the tile index may use for loaded shards (MB)", 16, 1048576),
    P("image_queue_size", 2, "camera frames waiting for the worker; when full the oldest is dropped "
      "(counted as drops.image.queue_full)", 1, 1000),
    P("input_depth_s", 1.0, "depth of the fix, odometry and camera_info subscriptions as seconds of their expected "
      "rate (expected_*_hz; unknown: 50 fixes, 200 odometry messages), so a busy moment loses none", 0.1, 60.0),
    P("executor_threads", 1, "executor threads: 1 takes every message on one thread in arrival order (image "
      "callbacks only enqueue; measured best here, docs/ros.md); > 1: a MultiThreadedExecutor running the "
      "image callbacks, the small messages' callback group (fix, odometry, camera_info, /tf_static) and the "
      "timers side by side", 1, 16),
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
    P("map_ortho_frame", "map_ortho", "frame_id of ~/map_pose: the orthophoto's own frame (map_frame's axes and "
      "origin, where the orthophoto puts things; differs from map_frame by the orthophoto's registration offset, "
      "learned with localizer.map_offset_estimate)"),
    P("base_frame", "base_link", "frame_id of the corrected NavSatFix (the vehicle reference point)"),
    P("path_max_poses", 1000, "poses kept in ~/path", 1, 1000000),
    P("markers_top_k", 10, "candidates shown in ~/candidates (MarkerArray)", 0, 1000),
    P("diagnostics_period_s", 1.0, "period of /diagnostics (s)", 0.05, 60.0),
    P("stale_input_s", 3.0, "diagnostics warn when no camera frame or GNSS fix arrived for this long (s)",
      0.1, 3600.0),
    P("log_throttle_s", 5.0, "at most one log line per drop reason per this many seconds", 0.0, 3600.0),
]
del P


def localizer_params() -> List[Param]:
    """``localizer.<field>`` for every field of ``pipeline.LocalizerConfig`` (core.config.params_of)."""
    from ..pipeline import LocalizerConfig

    return params_of(LocalizerConfig, LOCALIZER_PREFIX)


def all_params() -> List[ParamSpec]:
    return NODE_PARAMS + localizer_params()


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

    n = len(LOCALIZER_PREFIX)
    return LocalizerConfig.from_dict({k[n:]: v for k, v in values.items() if k.startswith(LOCALIZER_PREFIX)})


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
        v, err = spec.check(value)
        if err:
            problems.append(f"parameter '{name}' {err}")
        else:
            values[name] = v
    if "index_path" in by_name and "orthophoto" in by_name and not str(values.get("index_path", "")).strip() \
            and not str(values.get("orthophoto", "")).strip():
        problems.append("set 'orthophoto' (metric matching: a GeoTIFF or XYZ folder of the area) and/or 'index_path' "
                        "(retrieval: a tile index folder built with `geoloc index build` for the same model)")
    loc = None
    mount = values.get("camera_mount")
    if "camera_mount" in by_name and mount and len(mount) != 6:
        problems.append(f"parameter 'camera_mount' must be empty or six numbers x, y, z, roll, pitch, yaw, got {mount!r}")
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


GROUP_TITLES = {
    "node": "node: topics, model and index, camera, queues, outputs, diagnostics",
    "localizer": "localizer: camera use and keyframes (pipeline.LocalizerConfig)",
    "filter": "filter: the particle filter, GNSS and odometry models, statuses (core.filter.FilterParams)",
    "metric": "metric matching: BEV, windows, fusion, its likelihood and gate (metric.config.MetricParams)",
    "retrieval": "retrieval: sequence, search, likelihood, gate, relocalisation",
}
YAML_HEADER = """\
# Parameters of geoloc_node (ros2 run geoloc_ros geoloc_node --ros-args --params-file config/geoloc.yaml).
# Generated from the one schema (core.config: each field's help, range and group), every parameter at
# its default: `python -m geoloc_ros.ros.params config/geoloc.yaml` rewrites it; test_ros_params checks it.
# Unknown names, wrong types and out-of-range values stop the node with a message naming each one.
# The localizer: block is also a valid `--config` file of `geoloc eval replay` / `eval calibrate`.
"""


def yaml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        r = repr(v)
        return r if ("e" not in r and "inf" not in r) else f"{v:.10f}".rstrip("0")
    return json.dumps(v)


def _yaml_block(specs: Sequence[Param], indent: int, strip: str = "") -> List[str]:
    pad = " " * indent
    lines: List[str] = []
    for g in GROUPS:
        group = [s for s in specs if s.group == g]
        if not group:
            continue
        lines.append(f"{pad}# ---- {GROUP_TITLES.get(g, g)}")
        for s in group:
            lines += textwrap.wrap(f"{s.description} ({s.constraint_text()})", 116 - indent,
                                   initial_indent=f"{pad}# ", subsequent_indent=f"{pad}#   ")
            lines.append(f"{pad}{s.name[len(strip):]}: {yaml_value(s.default)}")
        lines.append("")
    return lines


def yaml_text() -> str:
    """config/geoloc.yaml: every parameter at its default, by group, each with its help and range."""
    lines = [YAML_HEADER.rstrip("\n"), f"{NODE_NAME}:", "  ros__parameters:"]
    lines += _yaml_block(NODE_PARAMS, 4)
    lines.append("    localizer:")
    lines += _yaml_block(localizer_params(), 6, LOCALIZER_PREFIX)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_yaml(path) -> None:
    """Rewrite a parameters file with ``yaml_text()`` (after a change of the schema)."""
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml_text())
    tmp.replace(path)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m geoloc_ros.ros.params config/geoloc.yaml  (rewrites it from the schema)")
    write_yaml(sys.argv[1])

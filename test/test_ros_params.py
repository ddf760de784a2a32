"""Node parameters: validation (ROS-free), the shipped YAML, declaration on a real rclpy node with
descriptors and ranges; the launch file (parsed with ast) and the rviz config (parsed as YAML)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.ros import params as P

ROOT = Path(__file__).resolve().parents[1]
YAML = ROOT / "config" / "geoloc.yaml"


def yaml_params():
    doc = yaml.safe_load(YAML.read_text())
    assert list(doc) == ["geoloc_node"] and list(doc["geoloc_node"]) == ["ros__parameters"]

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    return flat(doc["geoloc_node"]["ros__parameters"])


def test_an_index_alone_or_an_orthophoto_alone_validates_and_neither_is_a_clear_error():
    s = P.validate({"index_path": "/data/index"})
    assert s.index_path == "/data/index" and s.backend == "auto" and s.image_queue_size == 2
    assert type(s.localizer).__name__ == "LocalizerConfig"
    s = P.validate({"orthophoto": "/data/ortho.tif"})
    assert s.orthophoto == "/data/ortho.tif" and s.index_path == ""
    with pytest.raises(InvalidArgument, match="set 'orthophoto' .* and/or 'index_path'"):
        P.validate({})


@pytest.mark.parametrize("overrides,needle", [
    ({"index_pth": "/x"}, "unknown parameter 'index_pth' (did you mean index_path"),
    ({"backend": "cuda"}, "'backend' must be one of auto, tensorrt, onnxruntime, torch"),
    ({"image_queue_size": 0}, "'image_queue_size' must be in [1, 1000]"),
    ({"image_queue_size": 2.5}, "'image_queue_size' must be an integer"),
    ({"debug_crop_m": float("nan")}, "'debug_crop_m' must be finite"),
    ({"debug_crop_m": 1e9}, "'debug_crop_m' must be in [10, 10000]"),
    ({"compressed": "yes"}, "'compressed' must be true or false"),
    ({"fix_topic": 5}, "'fix_topic' must be a string"),
    ({"localizer.no_such_option": 1.0}, "unknown parameter 'localizer.no_such_option'"),
])
def test_invalid_values_are_rejected_with_a_message_naming_the_parameter(overrides, needle):
    with pytest.raises(InvalidArgument) as e:
        P.validate(dict({"index_path": "/x"}, **overrides))
    assert needle in str(e.value), str(e.value)
    assert "docs/ros.md" in str(e.value)


def test_all_problems_are_reported_together_and_foreign_ros_parameters_pass():
    with pytest.raises(InvalidArgument) as e:
        P.validate({"index_path": "/x", "a": 1, "b": 2, "backend": "x"})
    assert str(e.value).count("\n  - ") == 3
    s = P.validate({"index_path": "/x", "use_sim_time": True, "qos_overrides./fix.publisher.depth": 3})
    assert "use_sim_time" not in s.values


def test_integers_are_accepted_for_float_parameters():
    s = P.validate({"index_path": "/x", "debug_crop_m": 300})
    assert s.debug_crop_m == 300.0 and isinstance(s.debug_crop_m, float)


def test_every_parameter_has_a_description_and_numbers_have_ranges():
    specs = P.all_params()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert any(n.startswith("localizer.") for n in names), "LocalizerConfig fields must become parameters"
    for s in specs:
        assert len(s.description) > 10, s.name
        if s.kind in (int, float) and not s.name.startswith("localizer."):
            assert s.lo is not None and s.hi is not None, f"{s.name} has no range"
        if s.lo is not None and s.hi is not None:
            assert s.lo <= s.default <= s.hi, f"{s.name} default {s.default} outside [{s.lo}, {s.hi}]"


def test_localizer_parameters_reach_the_localizer_config():
    num = [s for s in P.localizer_params() if s.kind is float]
    assert num, "no numeric LocalizerConfig field"
    spec = num[0]
    lo = spec.lo if spec.lo is not None else -1e9
    hi = spec.hi if spec.hi is not None else 1e9
    value = spec.default * 1.5 if spec.default and lo <= spec.default * 1.5 <= hi else (lo + min(hi, lo + 2)) / 2
    s = P.validate({"index_path": "/x", spec.name: value})
    field = spec.name[len("localizer."):]
    obj = s.localizer
    for part in field.split("."):
        obj = getattr(obj, part)
    assert obj == pytest.approx(value)


def test_yaml_lists_exactly_the_declared_parameters_and_validates():
    values = yaml_params()
    declared = {s.name for s in P.all_params()}
    assert set(values) == declared, (f"missing from YAML: {sorted(declared - set(values))}; "
                                     f"not declared: {sorted(set(values) - declared)}")
    s = P.validate(dict(values, index_path="/data/index"))
    defaults = {sp.name: sp.default for sp in P.all_params()}
    for k, v in values.items():  # the shipped YAML documents the defaults
        if k == "index_path":
            continue
        d = defaults[k]
        assert (v == pytest.approx(d) if isinstance(d, float) else v == (list(d) if isinstance(d, tuple) else d)), k
    assert s.values["backend"] == "auto"


def test_yaml_comments_each_parameter():
    lines = YAML.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s+([a-z_][a-z0-9_]*):\s*\S", line)
        if m and i > 0:
            assert lines[i - 1].strip().startswith("#") or lines[i - 1].strip().endswith(":"), line


# ---------------------------------------------------------------- real rclpy declaration

@pytest.fixture
def ros_context(tmp_path, monkeypatch):
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (pip install .[ros])")
    from _shared import ros_domain

    monkeypatch.setenv("ROS_DOMAIN_ID", str(ros_domain()))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "log"))
    made = []

    def make(args):
        ctx = rclpy.Context()
        rclpy.init(args=["x", "--ros-args", *args], context=ctx)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        rclpy.shutdown(context=ctx)


def test_declare_on_a_real_node_reads_a_params_file_and_sets_descriptors(ros_context, tmp_path):
    from rclpy.node import Node

    f = tmp_path / "p.yaml"
    values = yaml_params()
    values.update(index_path="/data/index", debug_crop_m=150, backend="onnxruntime")
    doc = {"geoloc_node": {"ros__parameters": values}}
    f.write_text(yaml.safe_dump(doc))
    ctx = ros_context(["--params-file", str(f), "-p", "image_queue_size:=7"])
    node = Node("geoloc_node", context=ctx)
    try:
        s = P.declare(node)
        assert s.backend == "onnxruntime" and s.image_queue_size == 7 and s.debug_crop_m == 150.0
        assert node.get_parameter("debug_crop_m").value == 150.0
        assert node.get_parameter("index_path").value == "/data/index"
        d = node.describe_parameters(["debug_crop_m", "image_queue_size", "backend"])
        assert d[0].floating_point_range[0].from_value == 10.0 and d[0].read_only
        assert d[1].integer_range[0].to_value == 1000 and "queue" in d[1].description
        assert "onnxruntime" in d[2].additional_constraints
        assert set(P.node_overrides(node)) >= {"index_path", "image_queue_size"}
    finally:
        node.destroy_node()


def test_declare_rejects_unknown_and_out_of_range_overrides(ros_context):
    from rclpy.node import Node

    ctx = ros_context(["-p", "index_path:=/x", "-p", "imag_topic:=/cam", "-p", "markers_top_k:=-1"])
    node = Node("geoloc_node", context=ctx)
    try:
        with pytest.raises(InvalidArgument) as e:
            P.declare(node)
        assert "unknown parameter 'imag_topic' (did you mean image_topic" in str(e.value)
        assert "'markers_top_k' must be in [0, 1000]" in str(e.value)
    finally:
        node.destroy_node()


# ---------------------------------------------------------------- launch and rviz files

def test_launch_file_declares_the_documented_arguments_and_starts_geoloc_node():
    src = (ROOT / "launch" / "geoloc.launch.py").read_text()
    tree = ast.parse(src)
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    args = [c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", None) == "DeclareLaunchArgument"]
    assert {"params_file", "use_sim_time", "namespace", "backend"} <= set(args)
    node_calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "Node"]
    assert len(node_calls) == 1
    kw = {k.arg: k.value for k in node_calls[0].keywords}
    assert kw["package"].value == "geoloc_ros" and kw["executable"].value == "geoloc_node"
    common = next(c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "dict")
    assert {k.arg: k.value for k in common.keywords}["name"].value == P.NODE_NAME
    # lifecycle:=true offers the managed node (same name, parameters and topics), configured and
    # activated by the launch file unless autostart:=false
    assert {"lifecycle", "autostart"} <= set(args)
    lc_calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "LifecycleNode"]
    assert len(lc_calls) == 1
    lkw = {k.arg: k.value for k in lc_calls[0].keywords}
    assert lkw["package"].value == "geoloc_ros" and lkw["executable"].value == "geoloc_lifecycle_node"
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"} <= attrs
    # the backend choices match the node's
    backends = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "BACKENDS")
    assert set(ast.literal_eval(backends.value)) - {""} == set(P.BACKENDS)
    # the executable exists as a console script; the launch file is installed
    setup = (ROOT / "setup.py").read_text()
    assert '"geoloc_node = geoloc_ros.ros.node:main"' in setup and 'glob("launch/*.py")' in setup
    assert '"geoloc_lifecycle_node = geoloc_ros.ros.lifecycle:main"' in setup


def test_rviz_config_shows_the_node_outputs_with_matching_qos():
    cfg = yaml.safe_load((ROOT / "rviz" / "geoloc.rviz").read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    by_topic = {d["Topic"]["Value"]: d for d in vm["Displays"] if "Topic" in d}
    want = {"/camera/image_raw": ("Image", "Best Effort"), "/geoloc/debug_image": ("Image", "Best Effort"),
            "/geoloc/pose": ("PoseWithCovariance", "Reliable"), "/geoloc/path": ("Path", "Reliable"),
            "/geoloc/candidates": ("MarkerArray", "Reliable")}
    for topic, (cls, rel) in want.items():
        d = by_topic[topic]
        assert d["Class"] == f"rviz_default_plugins/{cls}" and d["Enabled"] is True, topic
        assert d["Topic"]["Reliability Policy"] == rel, topic
    node_src = "".join((ROOT / "geoloc_ros" / "ros" / f).read_text() for f in ("node.py", "publishing.py", "diagnostics.py"))
    for topic in ("geoloc/debug_image", "geoloc/pose", "geoloc/path", "geoloc/candidates"):
        assert f'"{topic}"' in node_src


def test_foxglove_layout_parses_and_names_only_topics_the_node_publishes():
    import json

    layout = json.loads((ROOT / "foxglove" / "geoloc.json").read_text())
    node_src = "".join((ROOT / "geoloc_ros" / "ros" / f).read_text() for f in ("node.py", "publishing.py", "diagnostics.py"))
    published = {"/" + t.lstrip("/") for t in re.findall(r'create_publisher\(\w+, "([^"]+)"', node_src)}
    assert {"/geoloc/fix", "/geoloc/pose", "/geoloc/path", "/geoloc/debug_image", "/diagnostics"} <= published

    def strings(o):
        if isinstance(o, dict):
            for k, v in o.items():
                yield k
                yield from strings(v)
        elif isinstance(o, list):
            for v in o:
                yield from strings(v)
        elif isinstance(o, str):
            yield o

    named = {s for s in strings(layout["configById"]) if s.startswith("/")}
    assert named and named <= published, named - published
    # the panels: map of the corrected fix, 3D of pose + path in map, the debug image, the diagnostics
    panels = layout["configById"]
    kinds = {k.split("!")[0]: v for k, v in panels.items()}
    assert kinds["map"]["followTopic"] == "/geoloc/fix"
    assert {"/geoloc/pose", "/geoloc/path"} <= set(kinds["3D"]["topics"]) and kinds["3D"]["followTf"] == "map"
    assert kinds["Image"]["imageMode"]["imageTopic"] == "/geoloc/debug_image"
    for kind in ("DiagnosticSummary", "DiagnosticStatusPanel"):
        assert kinds[kind]["topicToRender"] == "/diagnostics", kind
    assert kinds["DiagnosticStatusPanel"]["selectedName"] == f"{P.NODE_NAME}: localization"  # the node's status name
    assert 'f"{self.get_name()}: localization"' in node_src

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(layout["layout"])) == sorted(panels)  # every configured panel is placed, none missing
    assert 'glob("foxglove/*.json")' in (ROOT / "setup.py").read_text()  # installed beside the rviz config


def test_ros_doc_says_what_the_node_publishes_on_tf_and_documents_every_parameter_and_input_figure():
    """docs/ros.md: TF with the pip wheels and with a colcon install (and the node really publishes none),
    every node parameter, every input.<in>.* diagnostics figure, the lifecycle and the demo's domain."""
    from geoloc_ros.core.rates import StreamMonitor

    doc = (ROOT / "docs" / "ros.md").read_text()
    tf = doc.split("## Transforms (TF)")[1].split("\n## ")[0]
    for needle in ("publishes no TF", "colcon install", "tf2_msgs", "/tf_static", "map -> odom", "ekf_node",
                   "nothing on `/tf`"):
        assert needle in tf, needle
    for src in (ROOT / "geoloc_ros" / "ros").glob("*.py"):
        text = src.read_text()  # the claim holds: nothing in ros/ publishes TF (it may read /tf_static)
        for publisher in ("TransformBroadcaster", "create_publisher(TFMessage", '"/tf"'):
            assert publisher not in text, (src, publisher)
    for spec in P.NODE_PARAMS:
        assert f"`{spec.name}`" in doc or spec.name in doc, spec.name
    for key, _ in StreamMonitor().snapshot().values("input.<in>"):
        assert key.replace("input.<in>", "") in doc, key
    for needle in ("geoloc_lifecycle_node", "configure fail", "input_reliability", "ROS_DOMAIN_ID", "1-101"):
        assert needle in doc, needle


def test_the_shipped_yaml_is_the_one_generated_from_the_schema():
    """config/geoloc.yaml is ``yaml_text()``: after a schema change, `python -m geoloc_ros.ros.params
    config/geoloc.yaml` rewrites it."""
    assert YAML.read_text() == P.yaml_text()


def test_one_validator_for_the_dataclasses_and_the_ros_parameters():
    from geoloc_ros.core.config import params_of
    from geoloc_ros.pipeline import LocalizerConfig

    spec = next(p for p in params_of(LocalizerConfig) if p.name == "num_particles")
    assert spec.group == "filter" and spec.check(5)[1] == "must be in [100, 100000], got 5"
    with pytest.raises(InvalidArgument, match=r"localizer.num_particles must be in \[100, 100000\], got 5"):
        LocalizerConfig(num_particles=5)
    with pytest.raises(InvalidArgument, match=r"'localizer.num_particles' must be in \[100, 100000\], got 5"):
        P.validate({"orthophoto": "/o.tif", "localizer.num_particles": 5})
    groups = {p.group for p in P.all_params()}
    assert groups == {"node", "localizer", "filter", "metric", "retrieval"}


def test_the_localizer_block_of_the_parameters_file_is_a_valid_config_file(tmp_path):
    """`geoloc eval replay --config config/geoloc.yaml` reads its localizer: block."""
    from geoloc_ros.evaluation.replay import load_localizer_config

    cfg, overrides = load_localizer_config(YAML)
    assert len(overrides) == len(P.localizer_params()) and cfg.num_particles == 1000

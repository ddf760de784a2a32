"""The import direction of docs/architecture.md, checked on the source: every ``import`` of a
geoloc_ros module, at module level or inside a function, must be one its layer may make.

``test_package.py`` checks the other half of the boundary (which heavy libraries each layer may
import at import time); this file checks which of our own packages each one may reach at all.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "geoloc_ros"

# Which of our packages each package (or module, where it is the one exception of its package) may
# import. The most specific key wins. Keep in step with the table in docs/architecture.md.
ALLOWED: Dict[str, Set[str]] = {
    "core": set(),
    "bag": {"core"},
    "sim": {"core", "bag"},
    "data": {"core"},
    "index": {"core"},
    "index.build": {"core", "inference"},  # build_index(model="name") loads the encoder itself
    "metric": {"core", "index"},  # index.imagery: GeoTIFF / XYZ reads
    # the learned extractor is the adapter to the exported bevmatch pair (ONNX Runtime, torch fallback)
    "metric.learned": {"core", "index", "inference", "models"},
    "models": {"core", "metric"},  # bevmatch's torch volume is metric.correlate's, on the same grid
    "inference": {"core", "models"},  # never sim (parity inputs come from the caller) nor tools
    "pipeline": {"core", "metric"},
    "training": {"core", "models", "metric", "sim", "inference"},
    "evaluation": {"core", "bag", "sim", "index", "inference", "metric", "pipeline", "runtime"},
    "runtime": {"core", "index", "inference", "metric", "pipeline"},  # the one way in: node, replay, demo
    "ros": {"core", "index", "inference", "metric", "pipeline", "runtime"},  # the node only: never evaluation nor sim
    "tools": {"core", "bag", "sim", "data", "index", "metric", "models", "inference", "pipeline", "runtime", "training",
              "evaluation", "ros"},
    "cli": {"core", "tools"},
}
TOP = "geoloc_ros"


def modules() -> Iterator[Tuple[str, Path]]:
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_of(mod: str, path: Path) -> Iterator[Tuple[str, int]]:
    """Absolute names of the modules ``mod`` imports anywhere in it (module level and inside functions),
    with their line numbers. ``from X import y``: X, or X.y where y is a module or package of ours."""
    is_pkg = path.name == "__init__.py"
    here = [TOP] + (mod.split(".") if mod else [])
    base_pkg = here if is_pkg else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                anchor = base_pkg[:len(base_pkg) - (node.level - 1)]
                base = ".".join(anchor + (node.module.split(".") if node.module else []))
            subs = [a.name for a in node.names if base.split(".")[0] == TOP and _is_ours(f"{base}.{a.name}")]
            for name in subs or [base]:
                yield (f"{base}.{name}" if subs else base), node.lineno


def _is_ours(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PKG / rel).is_dir() or (PKG / rel).with_suffix(".py").is_file()


def imported(mod: str, path: Path) -> Iterator[Tuple[str, int]]:
    """Our modules that ``mod`` imports (dotted, without the top package), with their line numbers;
    a name of the top package itself (``from geoloc_ros import __version__``) is no layer's."""
    for name, line in imports_of(mod, path):
        if name.startswith(TOP + "."):
            yield name[len(TOP) + 1:], line


def layer_of(mod: str) -> Optional[str]:
    """The most specific ALLOWED key that names ``mod`` or a package above it."""
    parts = mod.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in ALLOWED:
            return key
    return None


def violations() -> List[str]:
    out = []
    for mod, path in modules():
        if not mod or mod == "__main__":
            continue
        key = layer_of(mod)
        if key is None:
            out.append(f"{mod}: no layer in ALLOWED (add it to the table and to docs/architecture.md)")
            continue
        own = key.split(".")[0]
        for target, line in imported(mod, path):
            dest = target.split(".")[0]
            if dest == own:
                continue
            if dest not in ALLOWED[key]:
                out.append(f"{path.relative_to(ROOT)}:{line}: {key} imports {target}")
    return out


def test_every_import_goes_the_documented_way():
    bad = violations()
    assert not bad, "imports against the layers of docs/architecture.md:\n" + "\n".join(bad)


def test_the_bag_package_needs_only_numpy_rosbags_mcap_and_core():
    """geoloc_ros.bag is what the replay, `geoloc play`, the live run and the sim tools read and write bags
    with: no torch, OpenCV, rasterio or rclpy (ROS-free installs replay bags too)."""
    allowed = {"numpy", "rosbags", "mcap", TOP}
    bad = [f"{path.relative_to(ROOT)}:{line}: {name}" for mod, path in modules() if mod.split(".")[0] == "bag"
           for name, line in imports_of(mod, path)
           if name.split(".")[0] not in sys.stdlib_module_names | allowed]
    assert not bad, bad


def test_the_table_is_the_one_in_the_docs():
    """docs/architecture.md prints the same table (a line per layer: `name` may import: a, b)."""
    doc = (ROOT / "docs/architecture.md").read_text()
    for key, allowed in ALLOWED.items():
        want = ", ".join(sorted(allowed)) or "nothing of ours"
        assert f"| `{key}` | {want} |" in doc, f"docs/architecture.md has no row '| `{key}` | {want} |'"


@pytest.mark.parametrize("src, expect", [
    ("from ..sim.render import GroundRenderer\n", "inference imports sim.render"),
    ("def f():\n    from geoloc_ros.tools.common import x\n", "inference imports tools.common"),
    ("import geoloc_ros.evaluation.metrics\n", "inference imports evaluation.metrics"),
    ("from .. import sim\n", "inference imports sim"),
])
def test_the_checker_sees_relative_absolute_and_nested_imports(tmp_path, monkeypatch, src, expect):
    fake = tmp_path / "geoloc_ros"
    (fake / "inference").mkdir(parents=True)
    (fake / "sim").mkdir()
    (fake / "inference" / "x.py").write_text(src)
    me = sys.modules[__name__]
    monkeypatch.setattr(me, "PKG", fake)
    monkeypatch.setattr(me, "ROOT", tmp_path)
    assert any(v.endswith(expect) for v in violations()), violations()

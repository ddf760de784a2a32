"""Packaging: version, layout, import boundaries, and Python 3.10 compatibility."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_single_version_in_package_xml_matches_setup():
    xml_version = ET.parse(ROOT / "package.xml").getroot().findtext("version")
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == xml_version


def test_package_xml_is_format_3_ament_python_with_real_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "geoloc_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "sensor_msgs", "nav_msgs", "python3-numpy", "python3-pyproj"} <= deps


def test_ament_layout_present():
    for p in ("resource/geoloc_ros", "setup.cfg", "geoloc_ros/__init__.py", "test", "README.md", "docs/quickstart.md",
              "docs/data.md", "docs/architecture.md"):
        assert (ROOT / p).exists(), p
    cfg = (ROOT / "setup.cfg").read_text()
    assert "script_dir=$base/lib/geoloc_ros" in cfg and "install_scripts=$base/lib/geoloc_ros" in cfg


def test_cli_help_lists_commands_and_each_subcommand_has_help():
    out = subprocess.run([sys.executable, "-m", "geoloc_ros.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("sim", "data", "train", "eval", "demo"):
        assert cmd in out.stdout
    for sub in (["sim", "world"], ["sim", "drive"], ["sim", "dataset"], ["sim", "preview"], ["data", "convert"], ["train"],
                ["eval", "retrieval"]):
        h = subprocess.run([sys.executable, "-m", "geoloc_ros.cli", *sub, "--help"], capture_output=True,
                           text=True, check=True).stdout
        assert ("--out" in h or "--checkpoint" in h) and len(h) > 300, sub


HEAVY = ('torch', 'rclpy', 'rasterio', 'faiss', 'onnxruntime', 'tensorrt', 'ray', 'matplotlib', 'cv2')
BLOCKED = f"import sys\nfor m in {HEAVY!r}:\n    sys.modules[m] = None\n"
# the layers that must import without the heavy libraries (they import them inside functions/backends)
LIGHT = ["geoloc_ros.cli", "geoloc_ros.pipeline", "geoloc_ros.index", "geoloc_ros.inference",
         "geoloc_ros.evaluation", "geoloc_ros.bag", "geoloc_ros.runtime"] + \
    [f"geoloc_ros.metric.{p.stem}" for p in sorted((ROOT / "geoloc_ros/metric").glob("*.py"))
     if p.stem not in ("__init__", "learned")] + \
    [f"geoloc_ros.core.{p.stem}" for p in sorted((ROOT / "geoloc_ros/core").glob("*.py")) if p.stem != "__init__"]


def test_core_and_cli_import_without_heavy_dependencies():
    """The import boundary of docs/architecture.md: core, pipeline, index, inference, evaluation and the
    CLI import with torch, rclpy, rasterio, faiss, onnxruntime, tensorrt, ray, matplotlib and OpenCV
    blocked; so does the metric package (OpenCV inside its functions)."""
    code = BLOCKED + f"import importlib\nfor m in {LIGHT!r}:\n    importlib.import_module(m)\n" + \
        "import geoloc_ros.cli\ngeoloc_ros.cli.build_parser()\nprint('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def find_python(version: str):
    """A working interpreter for ``version``: on PATH, or in pyenv's versions folder (shims may be inactive)."""
    import glob
    import os

    cands = [shutil.which(f"python{version}")]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    cands += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True)
    for c in cands:
        if c and subprocess.run([c, "--version"], capture_output=True).returncode == 0:
            return c
    return None


PY310 = find_python("3.10")


@pytest.mark.skipif(PY310 is None, reason="no working python3.10 (install it with pyenv to run this check)")
def test_compiles_and_cli_imports_on_python_310():
    """Humble/JetPack 6 run Python 3.10: every module must compile there and the CLI must import."""
    py310 = PY310
    files = [str(p) for p in (ROOT / "geoloc_ros").rglob("*.py")]
    code = ("import sys\nfor f in sys.argv[1:]:\n    compile(open(f, encoding='utf-8').read(), f, 'exec')\n"
            "print(len(sys.argv) - 1)")
    out = subprocess.run([py310, "-c", code, *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(files)
    cli = subprocess.run([py310, "-c", "import geoloc_ros.cli as c; c.build_parser().parse_args(['sim', 'world', "
                          "'--out', 'x']); print('ok')"], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0 and cli.stdout.strip() == "ok", cli.stderr
    has_numpy = subprocess.run([py310, "-c", "import numpy, pyproj"], capture_output=True).returncode == 0
    if has_numpy:  # the numpy-level core imports too when 3.10 has the libraries
        core = subprocess.run([py310, "-c", "import geoloc_ros.core.geo, geoloc_ros.core.tiles"], cwd=ROOT)
        assert core.returncode == 0


def test_python_requires_and_no_newer_syntax_declared():
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'python_requires=">=3.10"', setup)

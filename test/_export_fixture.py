"""One ONNX export of the shipped model per test session, shared by test_export and test_inference.

Made through the CLI entry point (``geoloc export onnx``) once per test run (``_shared.made_once``:
xdist workers share it); a second caller finds the finished folder and reuses it (~30 s on 2 cores).
$GEOLOC_TEST_ONNX_EXPORT may name an existing export folder to reuse instead (local iteration)."""
from __future__ import annotations

import os
from pathlib import Path


def shared_export(tmp_path_factory) -> Path:
    reuse = os.environ.get("GEOLOC_TEST_ONNX_EXPORT")  # developer shortcut: an export made earlier
    if reuse and (Path(reuse) / "manifest.json").is_file():
        return Path(reuse)
    from _shared import made_once

    def make(out):
        from geoloc_ros.tools import export_onnx

        assert export_onnx.main(["--checkpoint", "seqgeo_lite", "--out", str(out)]) == out

    return made_once(tmp_path_factory, "onnx_export_seqgeo_lite", make)

"""One ONNX export of the shipped model per test session, shared by test_export and test_inference.

Made through the CLI entry point (``geoloc export onnx``) into the session's base temp folder;
a second caller finds the finished folder and reuses it (~30 s saved on 2 cores)."""
from __future__ import annotations

from pathlib import Path


def shared_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.getbasetemp() / "onnx_export_seqgeo_lite"
    if not (out / "manifest.json").is_file():
        from geoloc_ros.tools import export_onnx

        assert export_onnx.main(["--checkpoint", "seqgeo_lite", "--out", str(out)]) == out
    return out

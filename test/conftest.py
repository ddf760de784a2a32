"""Shared fixtures: a small generated world (never downloaded), a drive through it and a tile index along
the drive, each made once per test run (xdist workers share them), and the order of the modules."""
from __future__ import annotations

import os

import pytest
from _shared import DRIVE_S, made_once

# pytest-xdist (`make test` runs two workers): one BLAS/OpenMP thread per worker and per process it
# starts, so two workers on two cores do not oversubscribe them (torch reads this when imported).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# `make test` hands out whole modules (`--dist loadscope --no-loadscope-reorder`: a module's fixtures are
# made once) in collection order: the longest first, so the two workers end together (measured with
# `pytest --durations=0`), and the makers of shared fixtures before their users, so no worker waits on
# the other's lock: test_export makes the ONNX export test_inference reads, test_ros_node the drive and
# index test_eval_replay and test_pipeline read (while the other worker runs test_encoders).
FIRST = ["test_encoders", "test_export", "test_ros_node", "test_inference", "test_demo", "test_eval_replay",
         "test_pipeline", "test_filter", "test_train", "test_index", "test_dataset", "test_bevmatch", "test_attitude",
         "test_world", "test_drive", "test_model", "test_survey", "test_package"]


def pytest_collection_modifyitems(config, items):
    rank = {m: i for i, m in enumerate(FIRST)}
    items.sort(key=lambda it: rank.get(it.module.__name__.rsplit(".", 1)[-1], len(FIRST)))  # stable


@pytest.fixture(scope="session")
def small_world():
    """A 400 m generated town (seed 11) in memory."""
    from geoloc_ros.sim.generate import generate_world

    return generate_world(seed=11, size_m=400.0, gsd_m=0.5)


@pytest.fixture(scope="session")
def small_world_dir(small_world, tmp_path_factory):
    """The same town written to disk (once per run: all workers share it)."""
    return made_once(tmp_path_factory, "world_w11", small_world.save)


# ------------------------------------------------------------------- one drive and one index for the suite
# test_pipeline (the Localizer), test_eval_replay (bag replay) and test_ros_node (the node over DDS)
# share these: one simulated drive of the small town and one real tile index along it.

@pytest.fixture(scope="session")
def encoder():
    """The shipped model on the torch backend (the reference implementation)."""
    from geoloc_ros.inference import load_encoder

    return load_encoder("seqgeo_lite", backend="torch")


@pytest.fixture(scope="session")
def drive_dir(small_world_dir, tmp_path_factory):
    """`geoloc sim drive` of the small town: 24 s, seed 5 (stays 50+ m inside the 400 m town, whole 96 m
    tiles, and has one multipath event), MCAP, raw and JPEG camera topics at the model's input size
    (256x128: keeps DDS light)."""
    from geoloc_ros.tools.sim_drive import main as sim_drive

    return made_once(tmp_path_factory, "drive", lambda out: sim_drive(
        ["--world", str(small_world_dir), "--out", str(out), "--seed", "5", "--duration-s", str(DRIVE_S),
         "--compressed", "--width", "256", "--height", "128"]))


@pytest.fixture(scope="session")
def index_dir(small_world, small_world_dir, drive_dir, encoder, tmp_path_factory):
    """A real tile index (shipped model, torch, FAISS) of a 30 m corridor along the drive, 12 m grid,
    built from the route as a GeoJSON file (as a user would)."""
    import json

    from geoloc_ros.index import build_index
    from geoloc_ros.index.tiling import corridor_area
    from geoloc_ros.sim.bag import read_truth_csv

    def make(out):
        truth = read_truth_csv(drive_dir / "truth.csv")
        route = tmp_path_factory.mktemp("route") / "route.geojson"
        route.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": [
            [float(a), float(b)] for a, b in zip(truth["lon"][::5], truth["lat"][::5])]}}))
        build_index(small_world_dir / "orthophoto.tif", encoder, out, spacing_m=12.0, area=corridor_area(route, 15.0),
                    datum=(small_world.meta.origin_lat, small_world.meta.origin_lon), progress=False, command="test")

    return made_once(tmp_path_factory, "index", make)


@pytest.fixture(scope="session")
def index(index_dir, encoder):
    from geoloc_ros.index import TileIndex

    return TileIndex.open(index_dir, expect_model=encoder.identity)


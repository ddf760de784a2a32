"""The synthetic world: georeferencing, determinism, content, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from geoloc_ros.cli import main as cli_main
from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument
from geoloc_ros.core.geo import LocalFrame, heading_deg_to_yaw, utm_epsg_for, yaw_to_heading_deg
from geoloc_ros.sim.generate import cast_shadows, generate_world
from geoloc_ros.sim.world import Sem, World, sha256_file


def test_utm_zone_and_local_frame_round_trip():
    assert utm_epsg_for(44.4759, -73.2121) == 32618
    assert utm_epsg_for(-33.9, 151.2) == 32756
    fr = LocalFrame.at(44.4759, -73.2121)
    lat, lon = fr.to_latlon(np.array([0.0, 512.3, -999.9]), np.array([0.0, -250.0, 1000.0]))
    x, y = fr.from_latlon(lat, lon)
    np.testing.assert_allclose(x, [0.0, 512.3, -999.9], atol=1e-6)
    np.testing.assert_allclose(y, [0.0, -250.0, 1000.0], atol=1e-6)
    # the datum is within half a metre (rounding to whole UTM metres) of the requested origin
    x0, y0 = fr.from_latlon(44.4759, -73.2121)
    assert abs(x0) <= 0.5 and abs(y0) <= 0.5


def test_grid_convergence_sign_east_of_central_meridian():
    # zone 18 central meridian is 75 W; at 73.2 W, 44.5 N grid north is ~1.25 deg east of true north
    conv = LocalFrame.at(44.4759, -73.2121).grid_convergence_deg()
    assert conv == pytest.approx(1.787 * np.sin(np.radians(44.4759)), abs=0.05)


def test_heading_conventions():
    assert yaw_to_heading_deg(0.0) == pytest.approx(90.0)  # east
    assert yaw_to_heading_deg(np.pi / 2) == pytest.approx(0.0)  # north
    assert heading_deg_to_yaw(180.0) == pytest.approx(-np.pi / 2)  # south


def test_pixel_latlon_round_trip_through_rasterio_and_pyproj(small_world_dir, small_world):
    import rasterio
    from pyproj import Transformer

    with rasterio.open(small_world_dir / "orthophoto.tif") as src:
        assert src.crs.to_epsg() == small_world.frame.epsg
        assert src.count == 3 and src.dtypes[0] == "uint8"
        assert src.block_shapes[0] == (256, 256)  # tiled
        to_ll = Transformer.from_crs(src.crs.to_epsg(), 4326, always_xy=True)
        rng = np.random.default_rng(0)
        rows, cols = rng.integers(0, src.height, 20), rng.integers(0, src.width, 20)
        for r, c in zip(rows, cols):
            e, n = src.xy(int(r), int(c))  # pixel centre, UTM
            lon, lat = to_ll.transform(e, n)
            x, y = small_world.frame.from_latlon(lat, lon)
            rr, cc = small_world.xy_to_rc(x, y)
            assert (int(np.floor(rr)), int(np.floor(cc))) == (r, c)
            # and back: rasterio's own inverse gives the same pixel
            ue, un = Transformer.from_crs(4326, src.crs.to_epsg(), always_xy=True).transform(lon, lat)
            assert src.index(ue, un) == (r, c)


def test_building_geojson_footprints_land_on_building_pixels(small_world_dir, small_world):
    feats = json.loads((small_world_dir / "buildings.geojson").read_text())["features"]
    assert len(feats) == len(small_world.buildings) > 10
    for f in feats[:25]:
        ring = np.array(f["geometry"]["coordinates"][0][:-1])
        lon, lat = ring[:, 0].mean(), ring[:, 1].mean()
        x, y = small_world.frame.from_latlon(lat, lon)
        r, c = (int(v) for v in small_world.xy_to_rc(x, y))
        assert small_world.object_id[r, c] == f["properties"]["id"]
        assert small_world.semantic[r, c] == Sem.BUILDING
        assert small_world.height[r, c] == pytest.approx(f["properties"]["eave_m"], abs=f["properties"]["height_m"])


def test_road_geojson_centrelines_are_on_road_pixels(small_world_dir, small_world):
    feats = json.loads((small_world_dir / "roads.geojson").read_text())["features"]
    assert len(feats) == small_world.roads.num_edges
    on_road = []
    for f in feats:
        pts = np.array(f["geometry"]["coordinates"])
        mid = pts[len(pts) // 2] if len(pts) > 2 else pts.mean(0)
        x, y = small_world.frame.from_latlon(mid[1], mid[0])
        r, c = (int(v) for v in small_world.xy_to_rc(x, y))
        on_road.append(small_world.semantic[r, c] in (Sem.ROAD, Sem.MARKING, Sem.MARKING_YELLOW))
    assert np.mean(on_road) > 0.95


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    files = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        w = generate_world(seed=seed, size_m=300.0)
        w.save(tmp_path / name)
        files[name] = {p.name: sha256_file(p) for p in sorted((tmp_path / name).iterdir())}
    assert files["a"] == files["b"]
    assert files["a"]["orthophoto.tif"] != files["c"]["orthophoto.tif"]


def test_town_is_not_a_perfect_grid_and_has_all_features():
    w = generate_world(seed=7, size_m=1200.0)
    roads = w.roads
    degrees = np.array([roads.degree(n) for n in range(len(roads.nodes))])
    assert (degrees == 3).sum() >= 3, "T-junctions expected (removed edges)"
    assert (degrees == 4).sum() >= 3, "four-way intersections expected"
    assert any(len(p) > 2 for p in roads.edge_points), "curved roads expected"
    lengths = np.array([roads.length(e) for e in range(roads.num_edges)])
    assert lengths.std() / lengths.mean() > 0.15, "block sizes should vary"
    headings = np.degrees(np.arctan2(*np.diff(np.stack([p[[0, -1]] for p in roads.edge_points]), axis=1)[:, 0, ::-1].T))
    assert np.abs(np.mod(headings, 90.0)).std() > 0.5, "roads should not all be axis-aligned"
    counts = np.bincount(w.semantic.ravel(), minlength=len(Sem))
    for cls in (Sem.ROAD, Sem.MARKING, Sem.MARKING_YELLOW, Sem.SIDEWALK, Sem.BUILDING, Sem.TREE, Sem.PARKING,
                Sem.FIELD, Sem.CAR):
        assert counts[cls] > 0, f"no {cls.name} pixels"
    b = w.buildings
    assert len(b) > 50
    assert len({tuple(c) for c in b.facade_rgb}) > 10 and len({tuple(c) for c in b.roof_rgb}) > 10
    assert b.eave_h.max() > 25 and b.eave_h.min() < 8, "tall downtown and low houses expected"
    assert (b.ridge_h > 0).sum() > 5, "gabled roofs expected"
    assert (w.height[w.semantic == Sem.BUILDING] > 0).all()
    assert (w.height[np.isin(w.semantic, (Sem.ROAD, Sem.SIDEWALK, Sem.GRASS))] == 0).all()


def test_shadows_fall_away_from_the_sun():
    h = np.zeros((200, 200), np.float32)
    h[90:110, 90:110] = 20.0  # a 10 m x 10 m, 20 m tall tower at 0.5 m/px
    sh = cast_shadows(h, 0.5, sun_azimuth_deg=180.0, sun_elevation_deg=45.0)  # sun in the south
    assert sh[80, 100] and sh[60, 100], "shadow expected north of the tower (up to 20 m)"
    assert not sh[45, 100], "shadow longer than height / tan(elevation)"
    assert not sh[120, 100] and not sh[100, 130], "no shadow south or east"


def test_orthophoto_is_darker_in_shadow(small_world):
    w = small_world
    az, el = w.meta.params["survey_sun_azimuth_deg"], w.meta.params["survey_sun_elevation_deg"]
    sh = cast_shadows(w.height, w.meta.gsd_m, az, el)
    ground = np.isin(w.semantic, (Sem.GRASS, Sem.ROAD, Sem.SIDEWALK))
    ratio = w.ortho.astype(float).sum(-1) / np.maximum(w.albedo.astype(float).sum(-1), 1)
    assert (sh & ground).sum() > 100
    assert np.median(ratio[sh & ground]) < 0.6 < np.median(ratio[~sh & ground])


def test_load_refuses_what_is_not_a_world(tmp_path, small_world_dir):
    with pytest.raises(IncompatibleArtifact, match="no world.json"):
        World.load(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    m = json.loads((small_world_dir / "world.json").read_text())
    m["format_version"] = 999
    (bad / "world.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleArtifact, match="regenerate"):
        World.load(bad)


def test_world_load_round_trip(small_world_dir, small_world):
    w = World.load(small_world_dir)
    np.testing.assert_array_equal(w.ortho, small_world.ortho)
    np.testing.assert_array_equal(w.height, small_world.height)
    np.testing.assert_array_equal(w.semantic, small_world.semantic)
    assert w.roads.num_edges == small_world.roads.num_edges
    np.testing.assert_allclose(w.roads.edge_points[3], small_world.roads.edge_points[3])
    np.testing.assert_array_equal(w.buildings.facade_rgb, small_world.buildings.facade_rgb)


@pytest.mark.parametrize("kwargs, match", [
    (dict(size_m=50.0), "size-m"), (dict(size_m=1e6), "size-m"), (dict(gsd_m=0.0), "gsd-m"),
    (dict(size_m=301.0, gsd_m=2.0), "multiple"), (dict(origin_lat=89.0), "origin-lat"),
    (dict(origin_lon=-200.0), "origin-lon"), (dict(seed=-1), "seed"), (dict(size_m=float("nan")), "size-m"),
])
def test_invalid_world_arguments_are_refused(kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        generate_world(**{"seed": 1, "size_m": 300.0, **kwargs})


def test_cli_world_refuses_existing_output_without_force(tmp_path, capsys):
    out = tmp_path / "w"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    rc = cli_main(["sim", "world", "--out", str(out), "--size-m", "200"])
    assert rc == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "precious.txt").read_text() == "user data"
    assert cli_main(["sim", "world", "--out", str(out), "--size-m", "200", "--force"]) == 0
    assert not (out / "precious.txt").exists() and (out / "world.json").is_file()
    m = json.loads((out / "world.json").read_text())
    assert m["command"].startswith("geoloc") and m["seed"] == 7


def test_cli_world_argument_errors_are_clear(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["sim", "world", "--out", str(tmp_path / "x"), "--size-m", "-5"])
    assert "--size-m must be in" in capsys.readouterr().err
    rc = cli_main(["sim", "world", "--out", str(tmp_path / "y"), "--size-m", "100"])
    assert rc == 2 and "between 200 and 20000" in capsys.readouterr().err


def test_cli_world_unwritable_output(tmp_path, capsys):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        rc = cli_main(["sim", "world", "--out", str(ro / "w"), "--size-m", "200"])
        assert rc == 2 and "cannot write" in capsys.readouterr().err
    finally:
        os.chmod(ro, 0o700)

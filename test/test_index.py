"""Tile index: geometry, heading bins, exact radius search, manifests, corrupt files, resume, Ray, XYZ, LRU.

Real components throughout: the shipped seqgeo_lite weights on torch, real FAISS, real GeoTIFFs
(the conftest town), PNG tile folders written here, a local Ray instance.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from geoloc_ros.core.errors import IncompatibleArtifact, InvalidArgument, OutputExists
from geoloc_ros.core.geo import heading_deg_to_yaw

TILE_M, TILE_PX = 96.0, 192


@pytest.fixture(scope="module")
def encoder():
    from geoloc_ros.inference import load_encoder

    return load_encoder("seqgeo_lite", backend="torch")


def bbox_around(world, x0, y0, x1, y1):
    from geoloc_ros.index.tiling import Area

    lat0, lon0 = world.frame.to_latlon(x0, y0)
    lat1, lon1 = world.frame.to_latlon(x1, y1)
    return Area(kind="bbox", bbox=(float(lat0), float(lon0), float(lat1), float(lon1)))


def build(world, world_dir, encoder, out, *, half=20.0, spacing=20.0, K=4, shard_m=25.0, batch=5, **kw):
    from geoloc_ros.index import build_index

    # +-(half + 2) m so the grid's edge positions survive the bbox test (the lat/lon box is rotated
    # against the UTM grid by the convergence, ~1.5 deg here)
    area = bbox_around(world, -half - 2.0, -half - 2.0, half + 2.0, half + 2.0)
    return build_index(world_dir / "orthophoto.tif", encoder, out, spacing_m=spacing, heading_bins=K, area=area,
                       shard_m=shard_m, batch_size=batch, datum=(world.meta.origin_lat, world.meta.origin_lon),
                       progress=False, command="test", **kw)


@pytest.fixture(scope="module")
def built(small_world, small_world_dir, encoder, tmp_path_factory):
    """36 tiles: 3 x 3 positions (20 m grid, +-20 m), K=4, 25 m shards (4, 8, 8, 16 tiles), batches of 5."""
    out = tmp_path_factory.mktemp("index") / "idx"
    res = build(small_world, small_world_dir, encoder, out)
    return res


@pytest.fixture(scope="module")
def index(built, encoder):
    from geoloc_ros.index import TileIndex

    return TileIndex.open(built.out, expect_model=encoder.identity)


def files_of(d: Path):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name != "manifest.json"}


def stable_manifest(d: Path):
    m = json.loads((d / "manifest.json").read_text())
    m.pop("created")
    m.pop("build")
    return m


# ---- geometry ----------------------------------------------------------------------------------

def test_geotiff_tile_equals_sim_aerial_tile(small_world, small_world_dir):
    """A heading-up tile cut through the GeoTIFF path (window read, reprojection, grid convergence)
    equals the simulator's aerial_tile on the in-memory orthophoto."""
    from geoloc_ros.index.imagery import open_imagery
    from geoloc_ros.sim.dataset import aerial_tile

    img = open_imagery(small_world_dir / "orthophoto.tif")
    fr = small_world.frame
    for x, y, h in [(0.0, 0.0, 0.0), (12.3, -40.7, 37.0), (-55.0, 20.0, 200.0), (60.0, 61.0, 315.0)]:
        smp = img.sample(fr, x, y, [h], TILE_M, TILE_PX)
        assert smp.valid[0], smp.reason
        ref = aerial_tile(small_world, x, y, float(heading_deg_to_yaw(h - fr.grid_convergence_deg(x, y))), TILE_M,
                          TILE_PX)
        diff = np.abs(smp.tiles[0].astype(int) - ref.astype(int))
        assert diff.max() <= 1, (x, y, h, diff.max())
        assert ref.std() > 5  # not a blank tile
        by_latlon = img.tile_at(*fr.to_latlon(x, y), h, TILE_M, TILE_PX)  # its own frame at (lat, lon)
        assert np.abs(by_latlon.astype(int) - ref.astype(int)).max() <= 1
        r0, c0, hh, ww = smp.window
        assert 0 <= r0 and 0 <= c0 and r0 + hh <= small_world.ortho.shape[0] and hh >= TILE_PX
    # a tile reaching past the raster edge is "outside", not zero-padded
    smp = img.sample(fr, 180.0, 0.0, [0.0, 90.0], TILE_M, TILE_PX)
    assert not smp.valid.any() and smp.reason == ["outside", "outside"]
    img.close()


def test_tile_centres_map_to_latlon_and_back(index, small_world):
    """Every tile's stored lat/lon, UTM easting/northing and local x/y agree (pyproj, independently)."""
    from pyproj import Transformer

    meta = index.tile_metadata()
    fr = small_world.frame
    assert index.frame == fr
    tr = Transformer.from_crs(4326, fr.epsg, always_xy=True)
    e, n = tr.transform(meta["lon"], meta["lat"])
    np.testing.assert_allclose(e, meta["easting"], atol=1e-6)
    np.testing.assert_allclose(n, meta["northing"], atol=1e-6)
    np.testing.assert_allclose(meta["easting"] - fr.origin_e, meta["x"], atol=1e-6)
    np.testing.assert_allclose(meta["northing"] - fr.origin_n, meta["y"], atol=1e-6)
    # centres lie on the spacing grid of the local frame, inside the requested +-20 m
    assert np.allclose(np.mod(meta["x"], 20.0), 0) and np.allclose(np.mod(meta["y"], 20.0), 0)
    assert set(np.unique(meta["x"])) == {-20.0, 0.0, 20.0} and index.num_tiles == 36
    lat0, lon0, lat1, lon1 = index.bounds_latlon
    assert lat0 == meta["lat"].min() and lon1 == meta["lon"].max()


def test_stored_descriptor_is_the_tile_at_its_centre_and_bin(index, small_world, small_world_dir, encoder):
    """Row i of the index is the encoding of the tile cut at its own (x, y, bin centre)."""
    from geoloc_ros.index.imagery import open_imagery

    meta = index.tile_metadata()
    img = open_imagery(small_world_dir / "orthophoto.tif")
    ids = np.array([0, 17, 35])
    stored = index.descriptors(ids)
    tiles = np.concatenate([img.sample(small_world.frame, meta["x"][i], meta["y"][i], [meta["heading_deg"][i]],
                                       TILE_M, TILE_PX).tiles for i in ids])
    d = encoder.encode_aerial(tiles)
    assert (np.sum(d * stored, axis=1) > 0.9999).all()
    assert float(d[0] @ stored[1]) < 0.999  # different tiles differ: the check can fail
    img.close()


def test_other_crs_geotiff_gives_the_same_tile(small_world, tmp_path):
    """The orthophoto reprojected to Web Mercator (another CRS, rotated against UTM) yields the same
    heading-up tile (up to double resampling)."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from geoloc_ros.index.imagery import open_imagery
    from geoloc_ros.sim.dataset import aerial_tile

    src_tf = small_world.meta.transform()
    H, W = small_world.ortho.shape[:2]
    dst_crs = "EPSG:3857"
    left, top = src_tf * (0, 0)
    right, bottom = src_tf * (W, H)
    tf, w2, h2 = calculate_default_transform(small_world.frame.crs, dst_crs, W, H, left, bottom, right, top)
    dst = np.zeros((3, h2, w2), np.uint8)
    reproject(small_world.ortho.transpose(2, 0, 1), dst, src_transform=src_tf, src_crs=small_world.frame.crs,
              dst_transform=tf, dst_crs=dst_crs, resampling=Resampling.bilinear, src_nodata=None, dst_nodata=None)
    p = tmp_path / "merc.tif"
    with rasterio.open(p, "w", driver="GTiff", width=w2, height=h2, count=3, dtype="uint8", crs=dst_crs,
                       transform=tf) as ds:
        ds.write(dst)
    img = open_imagery(p)
    assert img.crs_string == "EPSG:3857"
    fr = small_world.frame
    for h in (0.0, 70.0):
        smp = img.sample(fr, 5.0, -10.0, [h], TILE_M, TILE_PX)
        ref = aerial_tile(small_world, 5.0, -10.0, float(heading_deg_to_yaw(h - fr.grid_convergence_deg(5, -10))),
                          TILE_M, TILE_PX)
        err = np.abs(smp.tiles[0].astype(float) - ref.astype(float)).mean()
        assert smp.valid[0] and err < 10.0, err
        # the wrong heading is clearly different: the comparison can fail
        wrong = aerial_tile(small_world, 5.0, -10.0, float(heading_deg_to_yaw(h + 90.0)), TILE_M, TILE_PX)
        assert np.abs(smp.tiles[0].astype(float) - wrong.astype(float)).mean() > 2 * err
    img.close()


def test_imagery_without_georeference_is_refused(tmp_path):
    import rasterio

    from geoloc_ros.index.imagery import open_imagery

    p = tmp_path / "plain.tif"
    with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as ds:
        ds.write(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(InvalidArgument, match="no georeference"):
        open_imagery(p)
    with pytest.raises(InvalidArgument, match="does not exist"):
        open_imagery(tmp_path / "nope.tif")


# ---- heading bins, areas -----------------------------------------------------------------------

def test_heading_bins():
    from geoloc_ros.index.tiling import angle_diff_deg, bin_centres_deg, bins_within, heading_to_bin

    np.testing.assert_allclose(bin_centres_deg(8), [0, 45, 90, 135, 180, 225, 270, 315])
    assert list(heading_to_bin([0, 22.4, 22.6, 359, 180, -44], 8)) == [0, 0, 1, 0, 4, 7]
    assert list(bins_within(350.0, 22.5, 8)) == [0]
    assert list(bins_within(0.0, 45.0, 8)) == [0, 1, 7]
    assert angle_diff_deg(350, 10) == pytest.approx(20)
    with pytest.raises(InvalidArgument):
        bin_centres_deg(0)


def test_search_heading_filter_keeps_only_near_bins(index, small_world):
    q = index.descriptors([5])[0]
    lat, lon = small_world.frame.to_latlon(0.0, 0.0)
    res = index.search(q, k=None, near=(lat, lon), radius_m=100.0, heading_deg=100.0)
    assert res.num_candidates[0] == 9 and set(res.heading_bin[0]) == {1}  # 90 deg bin only (tol 45)
    np.testing.assert_allclose(res.heading_deg[0], 90.0)
    res = index.search(q, k=None, near=(lat, lon), radius_m=100.0, heading_deg=350.0, heading_tol_deg=85.0)
    assert set(res.heading_bin[0]) == {0, 3} and res.num_candidates[0] == 18


def test_corridor_and_polygon_areas(small_world, tmp_path):
    """Corridor: positions within the half-width of the road line; --headings road keeps the bins
    along the road (both ways). Polygon: positions inside only."""
    from geoloc_ros.index.tiling import corridor_area, plan_tiles, polygon_area

    fr = small_world.frame
    bounds = (*fr.to_latlon(-150, -150), *fr.to_latlon(150, 150))
    xs = np.array([-100.0, 100.0])
    lat, lon = fr.to_latlon(xs, np.array([0.0, 0.0]))
    (tmp_path / "road.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString",
                                                           "coordinates": [[lon[0], lat[0]], [lon[1], lat[1]]]}}]}))
    area = corridor_area(tmp_path / "road.geojson", 9.0)
    plan = plan_tiles(fr, area, bounds, spacing_m=5.0, heading_bins=8, headings="road")
    assert set(np.unique(plan.pos_y)) == {-5.0, 0.0, 5.0}
    # brute force: grid points within 9 m of the segment (round caps at the ends)
    gx, gy = np.meshgrid(np.arange(-150, 151, 5.0), np.arange(-150, 151, 5.0))
    d = np.hypot(np.maximum(np.abs(gx) - 100.0, 0.0), gy)
    assert len(plan.pos_x) == int((d <= 9.0).sum()) == 41 * 3 + 2 * 3
    assert plan.pos_x.min() == -105.0 and plan.pos_x.max() == 105.0
    # road runs east-west (true bearing ~90 + convergence ~ -1.5 deg): bins 90 and 270 only
    assert set(plan.tile_bin) == {2, 6}
    full = plan_tiles(fr, area, bounds, spacing_m=5.0, heading_bins=8, headings="all")
    assert full.num_tiles == 8 * len(full.pos_x) == 4 * plan.num_tiles
    ring = [fr.to_latlon(x, y) for x, y in [(-25, -25), (25, -25), (25, 25), (-25, 25), (-25, -25)]]
    (tmp_path / "poly.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[float(lo), float(la)] for la, lo in ring]]}))
    plan = plan_tiles(fr, polygon_area(tmp_path / "poly.geojson"), bounds, spacing_m=10.0, heading_bins=2)
    assert len(plan.pos_x) == 25 and np.abs(plan.pos_x).max() <= 20 and np.abs(plan.pos_y).max() <= 20
    with pytest.raises(InvalidArgument, match="no tile centre"):  # area outside the imagery
        far = polygon_area(tmp_path / "poly.geojson")
        far.polygons = [[r + np.array([1.0, 0.0]) for r in p] for p in far.polygons]
        plan_tiles(fr, far, bounds, spacing_m=10.0, heading_bins=2)


# ---- search ------------------------------------------------------------------------------------

def test_radius_search_is_exact_against_brute_force(index, small_world):
    meta = index.tile_metadata()
    allD = index.descriptors(np.arange(index.num_tiles))
    rng = np.random.default_rng(0)
    Qd = allD[[3, 20, 33]] + 0.05 * rng.standard_normal((3, allD.shape[1])).astype(np.float32)
    Qn = Qd / np.linalg.norm(Qd, axis=1, keepdims=True)
    fr = small_world.frame
    for cx, cy, r, hd in [(0, 0, 20.0, None), (10, -7, 26.0, 170.0), (-30, 30, 15.0, None), (3, 3, 500.0, 90.0),
                          (8, 2, 21.0, 300.0)]:
        lat, lon = fr.to_latlon(cx, cy)
        res = index.search(Qd, k=None, near=(lat, lon), radius_m=r, heading_deg=hd)
        res5 = index.search(Qd, k=5, near=(lat, lon), radius_m=r, heading_deg=hd)
        cx2, cy2 = fr.from_latlon(lat, lon)
        ok = np.hypot(meta["x"] - cx2, meta["y"] - cy2) <= r
        if hd is not None:
            d = np.abs((meta["heading_deg"] - hd + 180) % 360 - 180)
            ok &= d <= 45.0 + 1e-9
        cand = np.nonzero(ok)[0]
        assert len(cand) > 0 and res.num_candidates[0] == len(cand)
        for qi in range(3):
            s = allD[cand] @ Qn[qi]
            order = cand[np.argsort(-s, kind="stable")]
            assert set(res.ids[qi]) == set(cand)
            np.testing.assert_allclose(res.scores[qi], np.sort(s)[::-1], atol=1e-5)
            np.testing.assert_array_equal(res5.ids[qi][:min(5, len(cand))], res.ids[qi][:min(5, len(cand))])
            assert res5.ids[qi][0] == order[0]
            i0 = res.ids[qi][0]
            assert res.lat[qi][0] == meta["lat"][i0] and res.x[qi][0] == meta["x"][i0]


def test_global_search_finds_the_tile_itself(index):
    q = index.descriptors([0, 17, 35])
    res = index.search(q, k=10)
    assert list(res.ids[:, 0]) == [0, 17, 35]
    np.testing.assert_allclose(res.scores[:, 0], 1.0, atol=1e-5)
    assert res.ids.shape == (3, 10) and (res.num_candidates == 36).all()
    with pytest.raises(InvalidArgument):
        index.search(q[0, :10], k=3)
    with pytest.raises(InvalidArgument):
        index.search(q, k=None)


def test_out_of_coverage_query_has_zero_candidates(index, small_world):
    q = index.descriptors([1])[0]
    lat, lon = small_world.frame.to_latlon(3000.0, 0.0)
    assert not index.covers(lat, lon)
    assert index.covers(*small_world.frame.to_latlon(2.0, -3.0))
    # within one grid step (20 m) of a tile centre: the outermost centres are at +-20 m
    assert index.covers(*small_world.frame.to_latlon(39.0, 0.0))
    assert not index.covers(*small_world.frame.to_latlon(41.0, 0.0))
    assert not index.covers(*small_world.frame.to_latlon(35.0, 35.0))  # 21.2 m from (20, 20)
    res = index.search(q, k=10, near=(lat, lon), radius_m=50.0)
    assert res.num_candidates[0] == 0 and (res.ids == -1).all() and np.isnan(res.scores).all()
    assert res.ids.shape == (1, 10)
    res = index.search(q, k=None, near=(lat, lon), radius_m=50.0)
    assert res.ids.shape == (1, 0)


def test_distance_to_tiles_equals_brute_force(index):
    """The relocalisation road test's lookup: each point's distance to the nearest tile centre (inf
    beyond max_m), against every tile centre of the index."""
    meta = index.tile_metadata()
    C = np.unique(np.stack([meta["x"], meta["y"]], axis=1), axis=0)
    rng = np.random.default_rng(0)
    P = C[rng.integers(0, len(C), 300)] + rng.uniform(-20.0, 20.0, (300, 2))
    P = np.concatenate([P, C[:5], [[5000.0, 0.0]]])
    want = np.sqrt(np.min(np.sum((P[:, None, :] - C[None]) ** 2, axis=-1), axis=1))
    for max_m in (4.0, 13.0):
        got = index.distance_to_tiles(P[:, 0], P[:, 1], max_m)
        np.testing.assert_allclose(got, np.where(want <= max_m, want, np.inf), atol=1e-9)
    assert np.isfinite(got).sum() > 100 and np.isinf(got).sum() > 20 and (got[-6:-1] == 0).all() and np.isinf(got[-1])
    with pytest.raises(InvalidArgument):
        index.distance_to_tiles(P[:, 0], P[:, 1], float("nan"))


def test_lru_eviction_honours_the_memory_budget(built, small_world):
    from geoloc_ros.index import TileIndex

    shard_bytes = max(s["tiles"] for s in built.manifest["shards"]) * (512 * 4 + 64)
    budget_mb = 1.2 * shard_bytes / 1e6  # room for the largest shard, not for two of them
    small = TileIndex.open(built.out, memory_budget_mb=budget_mb)
    big = TileIndex.open(built.out, memory_budget_mb=512)
    q = big.descriptors([10, 30])
    fr = small_world.frame
    assert small.stats()["shards_loaded"] == 0  # lazy
    for cx, cy in [(-20, -20), (20, 20), (-20, 20), (20, -20), (-20, -20), (0, 0)]:
        lat, lon = fr.to_latlon(cx, cy)
        a = small.search(q, k=5, near=(lat, lon), radius_m=5.0)
        b = big.search(q, k=5, near=(lat, lon), radius_m=5.0)
        np.testing.assert_array_equal(a.ids, b.ids)
        st = small.stats()
        assert 0 < st["memory_mb"] <= budget_mb and st["shards_loaded"] <= 2
    assert st["shard_evictions"] >= 3 and big.stats()["shard_evictions"] == 0
    assert big.stats()["shards_loaded"] == 4  # the 4 corner shards stayed loaded


# ---- manifests, bad files ------------------------------------------------------------------------

def test_manifest_of_another_model_is_refused(built, encoder):
    from geoloc_ros.index import TileIndex

    other = dict(encoder.identity, fingerprint="0" * 64)
    with pytest.raises(IncompatibleArtifact, match="another model.*geoloc index build"):
        TileIndex.open(built.out, expect_model=other)
    with pytest.raises(IncompatibleArtifact, match="dim"):
        TileIndex.open(built.out, expect_model=dict(encoder.identity, dim=256))
    TileIndex.open(built.out, expect_model=encoder.identity)  # the right one opens


def test_missing_and_corrupt_files_are_refused(built, tmp_path, small_world):
    from geoloc_ros.index import TileIndex

    q = np.ones(512, np.float32)
    near = small_world.frame.to_latlon(0.0, 0.0)

    def copy(name):
        d = tmp_path / name
        shutil.copytree(built.out, d)
        return d

    d = copy("missing")
    shard = built.manifest["shards"][0]["files"]["index"]["path"]
    (d / shard).unlink()
    with pytest.raises(IncompatibleArtifact, match="missing"):
        TileIndex.open(d)
    d = copy("truncated")
    (d / shard).write_bytes((d / shard).read_bytes()[:-100])
    with pytest.raises(IncompatibleArtifact, match="truncated"):
        TileIndex.open(d)
    d = copy("flipped")  # same size, one byte changed: caught by sha256 when the shard loads
    b = bytearray((d / "shards" / Path(shard).name).read_bytes())
    b[len(b) // 2] ^= 0xFF
    (d / shard).write_bytes(bytes(b))
    idx = TileIndex.open(d)
    with pytest.raises(IncompatibleArtifact, match="corrupted"):
        idx.search(q, k=5, near=near, radius_m=200.0)
    d = copy("badjson")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(IncompatibleArtifact, match="not readable JSON"):
        TileIndex.open(d)
    d = copy("global")
    (d / "global.faiss").write_bytes(b"\0" * (d / "global.faiss").stat().st_size)
    idx = TileIndex.open(d, verify=False)
    with pytest.raises(IncompatibleArtifact, match="not a readable FAISS index"):
        idx.search(q, k=5)
    with pytest.raises(IncompatibleArtifact, match="does not exist"):
        TileIndex.open(tmp_path / "nothing")


# ---- build: resume, ray, bad input, CLI, XYZ ---------------------------------------------------

def test_resumed_build_equals_uninterrupted_build(built, small_world, small_world_dir, encoder, tmp_path):
    from geoloc_ros.index import TileIndex
    from geoloc_ros.index.build import BuildInterrupted

    out = tmp_path / "resumed"
    with pytest.raises(BuildInterrupted):
        build(small_world, small_world_dir, encoder, out,
              max_batches=3)
    assert len(list((out / "work").rglob("b*.npz"))) == 3 and not (out / "manifest.json").exists()
    with pytest.raises(IncompatibleArtifact, match="unfinished build"):
        TileIndex.open(out)
    with pytest.raises(OutputExists, match="other parameters"):  # resuming with other options is refused
        build(small_world, small_world_dir, encoder, out, batch=4)
    res = build(small_world, small_world_dir, encoder, out)
    assert res.cached_batches == 3 and res.new_batches == built.new_batches - 3
    assert not (out / "work").exists()
    a, b = files_of(built.out), files_of(out)
    assert list(a) == list(b) and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    assert stable_manifest(built.out) == stable_manifest(out)
    with pytest.raises(OutputExists, match="--force"):  # a finished index is never overwritten silently
        build(small_world, small_world_dir, encoder, out)


def test_ray_executor_equals_local_executor(built, small_world, small_world_dir, tmp_path):
    pytest.importorskip("ray")
    from geoloc_ros.index import TileIndex

    out = tmp_path / "ray"
    res = build(small_world, small_world_dir, "seqgeo_lite", out,
                executor="ray", backend="torch")
    assert res.manifest["build"]["executor"] == "ray"
    assert stable_manifest(out)["counts"] == stable_manifest(built.out)["counts"]
    a, b = TileIndex.open(built.out), TileIndex.open(out)
    ma, mb = a.tile_metadata(), b.tile_metadata()
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)
    da, db = a.descriptors(np.arange(a.num_tiles)), b.descriptors(np.arange(b.num_tiles))
    np.testing.assert_allclose(da, db, atol=2e-5)  # torch with 1 vs 2 threads: same up to float rounding
    assert (np.sum(da * db, axis=1) > 0.99999).all()


def test_bad_build_inputs(small_world, small_world_dir, encoder, tmp_path):
    from geoloc_ros.index import build_index

    with pytest.raises(InvalidArgument, match="no tile centre"):  # empty area
        build_index(small_world_dir / "orthophoto.tif", encoder, tmp_path / "a",
                    area=bbox_around(small_world, 5000, 5000, 5100, 5100), progress=False)
    with pytest.raises(InvalidArgument, match="all 4 planned tiles were skipped"):  # tiles do not fit the raster
        build_index(small_world_dir / "orthophoto.tif", encoder, tmp_path / "b", spacing_m=10.0, heading_bins=4,
                    area=bbox_around(small_world, 179.5, -0.5, 180.5, 0.5),
                    datum=(small_world.meta.origin_lat, small_world.meta.origin_lon), progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "user_file.txt").write_text("keep me")
    with pytest.raises(OutputExists, match="not empty"):
        build(small_world, small_world_dir, encoder, tmp_path / "c", half=0.0)
    assert (tmp_path / "c" / "user_file.txt").read_text() == "keep me"


def test_cli_build_from_xyz_tile_folder(small_world, encoder, tmp_path, capsys):
    """Web Mercator PNG tiles (z/x/y.png) written from the town: tiles cut from them match the
    GeoTIFF path, and `geoloc index build` indexes them."""
    from geoloc_ros.index import TileIndex
    from geoloc_ros.index.imagery import XYZImagery, write_xyz_tiles
    from geoloc_ros.sim.dataset import aerial_tile
    from geoloc_ros.tools.index_build import main

    m = small_world.meta
    files = write_xyz_tiles(tmp_path / "xyz", small_world.ortho, small_world.frame, m.x_min, m.y_max, m.gsd_m, 18)
    assert len(files) >= 4
    img = XYZImagery(tmp_path / "xyz")
    assert img.zoom == 18 and img.crs_string == "EPSG:3857"
    fr = small_world.frame
    smp = img.sample(fr, -8.0, 14.0, [30.0], TILE_M, TILE_PX)
    ref = aerial_tile(small_world, -8.0, 14.0, float(heading_deg_to_yaw(30.0 - fr.grid_convergence_deg(-8, 14))),
                      TILE_M, TILE_PX)
    err = np.abs(smp.tiles[0].astype(float) - ref.astype(float)).mean()
    assert smp.valid[0] and err < 10.0, err
    far = img.sample(fr, 185.0, 0.0, [0.0], TILE_M, TILE_PX)  # transparent (nodata) or missing tiles
    assert not far.valid[0]
    lat0, lon0 = fr.to_latlon(-10.5, -10.5)
    lat1, lon1 = fr.to_latlon(10.5, 10.5)
    out = main(["--imagery", str(tmp_path / "xyz"), "--checkpoint", "seqgeo_lite", "--backend", "torch",
                "--out", str(tmp_path / "idx"), "--spacing", "10", "--headings-bins", "2",
                "--bbox", f"{lat0},{lon0},{lat1},{lon1}", "--datum", f"{m.origin_lat},{m.origin_lon}"])
    idx = TileIndex.open(out, expect_model=encoder.identity)
    assert idx.num_tiles == 18 and idx.manifest["imagery"]["kind"] == "xyz" and idx.manifest["crs"] == "EPSG:3857"
    assert idx.manifest["build"]["command"].startswith("geoloc index build --imagery")
    assert "18 tiles" in capsys.readouterr().out
    # the index from XYZ tiles agrees with the GeoTIFF-cut tile at the same place
    q = encoder.encode_aerial(ref[None])[0]
    res = idx.search(q, k=1, near=fr.to_latlon(-8.0, 14.0), radius_m=15.0, heading_deg=30.0)
    assert res.num_candidates[0] == 3 and res.scores[0, 0] > 0.8


def test_index_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys; import geoloc_ros.index, geoloc_ros.tools.index_build, geoloc_ros.tools.index_info; "
            "bad = [m for m in ('faiss', 'rasterio', 'torch', 'ray', 'pyproj') if m in sys.modules]; "
            "assert not bad, bad; from geoloc_ros.index import TileIndex, SearchResult, build_index; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_geotiff_nodata_tiles_are_skipped(small_world, tmp_path):
    """A GeoTIFF with a nodata value: tiles over the nodata hole are 'nodata', others valid."""
    import rasterio

    from geoloc_ros.index.imagery import open_imagery

    ortho = small_world.ortho.copy()
    r, c = small_world.xy_to_rc(np.array([-100.0, -60.0]), np.array([60.0, 100.0]))  # x -100..-60, y 60..100
    ortho[int(r[1]):int(r[0]), int(c[0]):int(c[1])] = 0
    ortho[ortho.sum(axis=2) == 0] = 0
    p = tmp_path / "holes.tif"
    with rasterio.open(p, "w", driver="GTiff", width=ortho.shape[1], height=ortho.shape[0], count=3, dtype="uint8",
                       crs=small_world.frame.crs, transform=small_world.meta.transform(), nodata=0) as ds:
        ds.write(ortho.transpose(2, 0, 1))
    img = open_imagery(p)
    fr = small_world.frame
    bad = img.sample(fr, -80.0, 80.0, [0.0, 90.0], TILE_M, TILE_PX)
    assert bad.reason == ["nodata", "nodata"] and not bad.valid.any()
    good = img.sample(fr, 60.0, -60.0, [0.0], TILE_M, TILE_PX)
    assert good.valid[0]
    img.close()


def test_index_info_tool(built, capsys):
    from geoloc_ros.tools.index_info import main

    main([str(built.out), "--verify"])
    out = capsys.readouterr().out
    assert "36 (9 positions x K=4 bins" in out and "verified   4 shards" in out

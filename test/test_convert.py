"""Real dataset converters: tiny SeqGeo / CVUSA / VIGOR trees in their authors' layouts, converted and read back."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from geoloc_ros.cli import main as cli_main
from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.core.dataset import read_manifest, read_split
from geoloc_ros.data.convert import (
    bearing_deg,
    equirect_to_pinhole,
    heading_up_tile,
    parse_vigor_panorama_name,
    parse_vigor_satellite_name,
    seqgeo_frames,
)

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)


# ---------------------------------------------------------------------------------------------- synthetic images


def azimuth_panorama(width: int, height: int, vfov: float | None = None) -> np.ndarray:
    """Equirectangular panorama, north at the centre line: R, G encode the column's azimuth, B the row's elevation."""
    vfov = 360.0 * height / width if vfov is None else vfov
    az = np.radians((np.arange(width) + 0.5) / width * 360.0 - 180.0)
    el = (height / 2.0 - (np.arange(height) + 0.5)) / height * vfov
    img = np.zeros((height, width, 3), np.float64)
    img[..., 0] = 127.5 + 120 * np.cos(az)[None, :]
    img[..., 1] = 127.5 + 120 * np.sin(az)[None, :]
    img[..., 2] = 128 + 1.2 * el[:, None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def decode_azimuth(px) -> float:
    px = np.asarray(px, float)
    return math.degrees(math.atan2(px[..., 1].mean() - 127.5, px[..., 0].mean() - 127.5))


def decode_elevation(px) -> float:
    return (np.asarray(px, float)[..., 2].mean() - 128) / 1.2


def angle_diff(a: float, b: float) -> float:
    return (a - b + 180.0) % 360.0 - 180.0


def north_up_aerial(size: int) -> np.ndarray:
    """Grey square with a red marker 0.2 x size north of the centre and a blue one as far east."""
    img = np.full((size, size, 3), 128, np.uint8)
    c, off, m = size // 2, size // 5, size // 20
    img[c - off - m:c - off + m, c - m:c + m] = RED  # north
    img[c - m:c + m, c + off - m:c + off + m] = BLUE  # east
    return img


NEAR, FAR = 0.5 - 0.2 * math.sqrt(2), 0.5 + 0.2 * math.sqrt(2)  # marker centres in a tile of side size / sqrt 2


def centroid(img: np.ndarray, colour) -> np.ndarray:
    """(row, col) centroid of the pixels close to ``colour``, in units of the image size (0..1)."""
    d = np.abs(img.astype(int) - np.array(colour)).max(axis=2)
    rr, cc = np.nonzero(d < 60)
    assert len(rr) > 0, f"no {colour} pixels"
    return np.array([rr.mean() + 0.5, cc.mean() + 0.5]) / np.array(img.shape[:2])


def save(arr, path, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


# ---------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("heading", [30.0, 350.0, 181.0])
def test_pinhole_crop_looks_at_the_heading_with_the_right_fov_and_horizon(heading):
    pano = azimuth_panorama(1440, 720)
    cam = PinholeCamera(64, 32, 90.0)
    view = equirect_to_pinhole(pano, heading, cam)
    assert view.shape == (32, 64, 3) and view.dtype == np.uint8
    assert abs(angle_diff(decode_azimuth(view[:, 31:33]), heading)) < 0.5
    edge = math.degrees(math.atan(31.5 / 32.0))  # azimuth of the first/last column centre
    assert abs(angle_diff(decode_azimuth(view[:, 0]), heading - edge)) < 1.0
    assert abs(angle_diff(decode_azimuth(view[:, -1]), heading + edge)) < 1.0
    assert abs(decode_elevation(view[15:17, 31:33])) < 0.5  # horizon at the centre row
    assert decode_elevation(view[0, 31:33]) == pytest.approx(math.degrees(math.atan2(15.5, 32.0)), abs=0.6)
    assert decode_elevation(view[-1, 31:33]) == pytest.approx(-math.degrees(math.atan2(15.5, 32.0)), abs=0.6)


def test_narrower_fov_spans_fewer_degrees():
    pano = azimuth_panorama(1440, 720)
    view = equirect_to_pinhole(pano, 0.0, PinholeCamera(64, 32, 40.0))
    edge = math.degrees(math.atan(31.5 / 32.0 * math.tan(math.radians(20.0))))
    assert abs(angle_diff(decode_azimuth(view[:, -1]), edge)) < 0.5


@pytest.mark.parametrize("heading, red, blue", [
    (0.0, (NEAR, 0.5), (0.5, FAR)),  # north up: red at the top, blue (east) on the right
    (90.0, (0.5, NEAR), (NEAR, 0.5)),  # east up: blue at the top, red (north) on the left
    (180.0, (FAR, 0.5), (0.5, NEAR)),
    (270.0, (0.5, FAR), (FAR, 0.5)),
])
def test_heading_up_tile_puts_the_heading_at_the_top(heading, red, blue):
    img = north_up_aerial(200)
    tile, coverage = heading_up_tile([(img, 100.0, 100.0)], heading, side_px=200 / math.sqrt(2), out_px=64)
    assert tile.shape == (64, 64, 3) and coverage == 1.0
    assert np.allclose(centroid(tile, RED), red, atol=0.04)
    assert np.allclose(centroid(tile, BLUE), blue, atol=0.04)


def test_heading_up_tile_fills_outside_the_sources_and_reports_coverage():
    img = north_up_aerial(100)
    tile, coverage = heading_up_tile([(img, 100.0, 50.0)], 0.0, side_px=100, out_px=50)  # centred on the east edge
    assert coverage == pytest.approx(0.5)
    assert tile[:, 30:].max() == 0 and tile[:, :20].min() > 0


def test_bearing_and_source_name_parsing():
    assert bearing_deg(40.0, -73.0, 40.001, -73.0) == pytest.approx(0.0, abs=1e-6)
    assert bearing_deg(40.0, -73.0, 40.0, -72.999) == pytest.approx(90.0, abs=0.01)
    assert parse_vigor_panorama_name("NewYork/panorama/-3zU8Ab_c,40.7512345,-73.9712345,.jpg") == \
        ("-3zU8Ab_c", 40.7512345, -73.9712345)
    assert parse_vigor_satellite_name("satellite_40.75_-73.97.png") == (40.75, -73.97)
    meta = {"street_views": {"3": "c", "1": "a", "2": "b", "0": "z"}}
    assert seqgeo_frames(meta, 3) == ["a", "b", "c"]  # the last key is dropped, the rest sorted


# ---------------------------------------------------------------------------------------------- CVUSA


def make_cvusa(root, n_train=3, n_val=2):
    pano = azimuth_panorama(1232, 224)
    aerial = north_up_aerial(300)
    for name, n, first in (("train-19zl.csv", n_train, 1), ("val-19zl.csv", n_val, 100)):
        lines = []
        for i in range(first, first + n):
            pid = f"{i:07d}"
            save(pano, root / "streetview" / "panos" / f"{pid}.jpg", quality=95, subsampling=0)
            save(aerial, root / "bingmap" / "19" / f"{pid}.jpg", quality=95, subsampling=0)
            lines.append(f"bingmap/19/{pid}.jpg,streetview/panos/{pid}.jpg,annotations/{pid}.png")
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / name).write_text("\n".join(lines) + "\n")
    return root


def test_cvusa_pairs_become_heading_up_sequences_of_one(tmp_path, capsys):
    src, out = make_cvusa(tmp_path / "cvusa"), tmp_path / "out"
    assert cli_main(["data", "convert", "--format", "cvusa", "--src", str(src), "--out", str(out),
                     "--width", "128", "--height", "64", "--heading-deg", "90", "--tile-px", "64",
                     "--workers", "1"]) == 0
    assert "convert: cvusa" in capsys.readouterr().out
    m = read_manifest(out)
    assert m["source"] == "cvusa" and m["geo"] is False and m["seq_len"] == 1 and m["aerial"]["heading_up"]
    assert m["splits"] == {"train": 2, "val": 1, "test": 2}
    recs = {s: read_split(out, s) for s in m["splits"]}
    assert [r.seq for r in recs["test"]] == ["cvusa_0000100", "cvusa_0000101"]
    allr = [r for rs in recs.values() for r in rs]
    assert len({(r.x, r.y) for r in allr}) == len(allr)  # distinct positions for the geographic batch sampler
    for r in allr:
        assert len(r.frame_paths) == 1 and r.heading_deg == 90.0 and r.tile_heading_deg == 90.0
        view = np.asarray(Image.open(out / r.frame_paths[0]))
        assert view.shape == (64, 128, 3)
        assert abs(angle_diff(decode_azimuth(view[:, 62:66]), 90.0)) < 2.0  # looks east
        assert abs(angle_diff(decode_azimuth(view[:, 0]), 90.0 - math.degrees(math.atan(63.5 / 64)))) < 2.0
        tile = np.asarray(Image.open(out / r.aerial))
        assert tile.shape == (64, 64, 3)
        assert np.allclose(centroid(tile, BLUE), (NEAR, 0.5), atol=0.05)  # east is up
        assert np.allclose(centroid(tile, RED), (0.5, NEAR), atol=0.05)  # north on the left
    kf = list(csv.DictReader(open(out / "keyframes.csv")))
    assert len(kf) == 5 and kf[0]["image"] == recs["train"][0].frames


def test_cvusa_random_headings_are_seeded_and_workers_do_not_change_bytes(tmp_path):
    src = make_cvusa(tmp_path / "cvusa", n_train=4, n_val=1)
    outs = []
    for workers, seed in ((1, 5), (2, 5), (1, 6)):
        out = tmp_path / f"out_{workers}_{seed}"
        assert cli_main(["data", "convert", "--format", "cvusa", "--src", str(src), "--out", str(out), "--width", "64",
                         "--height", "32", "--tile-px", "32", "--seed", str(seed), "--workers", str(workers)]) == 0
        outs.append(out)
    a, b, c = ([r.heading_deg for s in ("train", "val", "test") for r in read_split(o, s)] for o in outs)
    assert a == b and a != c and len(set(a)) == len(a) and all(0 <= h < 360 for h in a)
    for r in read_split(outs[0], "train"):
        view = np.asarray(Image.open(outs[0] / r.frame_paths[0]))
        assert abs(angle_diff(decode_azimuth(view[:, 30:34]), r.heading_deg)) < 2.5
        assert (outs[0] / r.aerial).read_bytes() == (outs[1] / r.aerial).read_bytes()


# ---------------------------------------------------------------------------------------------- VIGOR

S = 64  # satellite image size of the fixture (VIGOR's are 640; offsets are in 640 px units)
LAT0, LON0, DEG = 40.75, -73.97, 1e-6  # canvas pixel (0, 0) and degrees per canvas pixel


def smooth_canvas(n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] / n
    img = np.stack([128 + 100 * np.sin(7 * x + 3 * y), 128 + 100 * np.cos(5 * y - 2 * x),
                    128 + 100 * np.sin(4 * (x + y))], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_vigor(root, panos_by_split, canvas):
    """Satellites: S px crops of ``canvas`` every S/2 px (VIGOR's 50 % overlap); panoramas at canvas (row, col)."""
    pano = azimuth_panorama(512, 256)
    centres = [(r, c) for r in range(S // 2, canvas.shape[0] - S // 2 + 1, S // 2)
               for c in range(S // 2, canvas.shape[1] - S // 2 + 1, S // 2)]

    def sat_name(r, c):
        return f"satellite_{LAT0 - r * DEG:.6f}_{LON0 + c * DEG:.6f}.png"

    for r, c in centres:
        save(canvas[r - S // 2:r + S // 2, c - S // 2:c + S // 2], root / "NewYork" / "satellite" / sat_name(r, c))
    k = 640.0 / S
    for split, panos in panos_by_split.items():
        lines = []
        for i, (pr, pc) in enumerate(panos):
            name = f"p{split}{i},{LAT0 - pr * DEG:.7f},{LON0 + pc * DEG:.7f},.jpg"
            save(pano, root / "NewYork" / "panorama" / name, quality=95, subsampling=0)
            near = sorted(centres, key=lambda t: max(abs(t[0] - pr), abs(t[1] - pc)))[:4]  # positive first
            refs = [f"{sat_name(r, c)} {(pr - r) * k:.4f} {(c - pc) * k:.4f}" for r, c in near]
            lines.append(f"{name} " + " ".join(refs))
        (root / "splits" / "NewYork").mkdir(parents=True, exist_ok=True)
        (root / "splits" / "NewYork" / f"same_area_balanced_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_vigor_tiles_are_centred_on_the_panorama_and_completed_from_semipositives(tmp_path):
    canvas = smooth_canvas(160)
    panos = {"train": [(60.0, 70.0), (90.0, 100.0), (75.0, 55.0)], "test": [(88.0, 60.0)]}
    src, out = make_vigor(tmp_path / "vigor", panos, canvas), tmp_path / "out"
    assert cli_main(["data", "convert", "--format", "vigor", "--src", str(src), "--out", str(out), "--width", "96",
                     "--height", "48", "--tile-px", "48", "--workers", "1", "--val-fraction", "0"]) == 0
    m = read_manifest(out)
    assert m["source"] == "vigor" and m["geo"] and m["splits"] == {"train": 3, "test": 1}
    assert m["aerial"]["coverage_mean"] == pytest.approx(1.0)
    assert m["worlds"][0]["name"] == "NewYork" and m["worlds"][0]["frame"]["epsg"] == 32618
    for split, pts in panos.items():
        recs = read_split(out, split)
        sidecar = list(csv.DictReader(open(out / "splits" / f"{split}_semipositive.csv")))
        assert len(sidecar) == 4 * len(recs)
        for r, (pr, pc) in zip(recs, pts):
            assert r.world == "NewYork" and len(r.frame_paths) == 1
            assert r.lat == pytest.approx(LAT0 - pr * DEG, abs=1e-7)  # from the panorama's file name
            assert r.lon == pytest.approx(LON0 + pc * DEG, abs=1e-7)
            view = np.asarray(Image.open(out / r.frame_paths[0]))
            assert view.shape == (48, 96, 3)
            assert abs(angle_diff(decode_azimuth(view[:, 46:50]), r.heading_deg)) < 2.5
            want, cov = heading_up_tile([(canvas, pc, pr)], r.heading_deg, S / math.sqrt(2), 48)
            got = np.asarray(Image.open(out / r.aerial)).astype(int)
            assert cov == 1.0 and np.abs(got - want).mean() < 4.0, r.seq
            rows = [s for s in sidecar if s["seq"] == r.seq]
            assert [s["kind"] for s in rows] == ["positive"] + ["semi-positive"] * 3
            if (pr, pc) == (75.0, 55.0):  # 11 px from its positive's centre: the positive alone cannot cover it
                pos = canvas[64 - S // 2:64 + S // 2, 64 - S // 2:64 + S // 2]
                _, cov_pos = heading_up_tile([(pos, pc - 64 + S / 2, pr - 64 + S / 2)], r.heading_deg,
                                             S / math.sqrt(2), 48)
                assert cov_pos < 0.97


def test_vigor_cross_area_and_training_reader(tmp_path):
    from geoloc_ros.training.data import SplitData

    canvas = smooth_canvas(128)
    src = make_vigor(tmp_path / "vigor", {"train": [(50.0, 50.0), (70.0, 60.0), (60.0, 75.0)]}, canvas)
    (src / "splits" / "NewYork" / "same_area_balanced_train.txt").rename(
        src / "splits" / "NewYork" / "pano_label_balanced.txt")
    out = tmp_path / "out"
    assert cli_main(["data", "convert", "--format", "vigor", "--src", str(src), "--out", str(out), "--width", "64",
                     "--height", "32", "--tile-px", "32", "--vigor-area", "cross", "--workers", "1"]) == 0
    m = read_manifest(out)
    assert m["splits"] == {"train": 2, "val": 1}  # NewYork is a cross-area training city
    data = SplitData.from_dataset(out, "train")
    assert data.seq_frames.shape == (2, 1) and len(data.frame_paths) == 2
    north, east = 20 * DEG * 111_100, 10 * DEG * 111_300 * math.cos(math.radians(LAT0))  # metres
    assert np.hypot(*(data.xy[0] - data.xy[1])) == pytest.approx(math.hypot(north, east), rel=0.02)


# ---------------------------------------------------------------------------------------------- SeqGeo


def make_seqgeo(root, n=7, views=8):
    sat = north_up_aerial(100)
    for i in range(1, n + 1):
        order = list(range(views))
        np.random.default_rng(i).shuffle(order)  # keys inserted out of order; the authors sort them
        street = {}
        for k in order:
            rel = f"seq{i:03d}\\{k:02d}.jpg"
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[...] = (20 * k, 100, 50 + i)  # red encodes the frame key
            save(frame, root / "street" / "2019_street" / f"seq{i:03d}" / f"{k:02d}.jpg", quality=95)
            street[str(k)] = {"lat": 44.48, "lon": -73.21 + 6e-5 * k + 0.01 * i, "name": f"2019\\{rel}"}
        save(sat, root / "satellite" / "sat2019" / f"{i}.png")
        meta = {"center": [44.48, -73.21 + 0.01 * i + 2e-4], "satellite_views": {"20": f"sat\\sat2019\\{i}.png"},
                "street_views": street}
        (root / "json" / "2019_JSON").mkdir(parents=True, exist_ok=True)
        (root / "json" / "2019_JSON" / f"{i}.json").write_text(json.dumps(meta))
    return root


def test_seqgeo_sequences_keep_seven_ordered_frames_and_north_up_tiles(tmp_path):
    from geoloc_ros.training.data import SplitData

    src, out = make_seqgeo(tmp_path / "seqgeo"), tmp_path / "out"
    assert cli_main(["data", "convert", "--format", "seqgeo", "--src", str(src), "--out", str(out), "--width", "64",
                     "--height", "32", "--tile-px", "50", "--workers", "1"]) == 0
    m = read_manifest(out)
    # 7 files: the authors' train is the first 5 (our train 4 + val 1), their validation files[6:] is our test
    assert m["splits"] == {"train": 4, "val": 1, "test": 1} and m["seq_len"] == 7
    assert m["aerial"]["heading_up"] is False and m["ground"]["hfov_deg"] is None
    assert [r.seq for r in read_split(out, "test")] == ["seqgeo_7"]
    for split in m["splits"]:
        for r in read_split(out, split):
            meta = json.loads((src / "json" / "2019_JSON" / f"{r.seq.split('_')[1]}.json").read_text())
            want = sorted(list(meta["street_views"])[:7])  # last inserted key dropped, rest sorted
            assert len(r.frame_paths) == 7
            for path, key in zip(r.frame_paths, want):
                img = np.asarray(Image.open(out / path))
                assert img.shape == (32, 64, 3) and abs(int(img[..., 0].mean()) - 20 * int(key)) <= 4
            assert r.heading_deg == pytest.approx(90.0, abs=0.1) and r.tile_heading_deg == 0.0  # driving east
            assert r.lat == pytest.approx(meta["center"][0]) and r.lon == pytest.approx(meta["center"][1])
            tile = np.asarray(Image.open(out / r.aerial))
            assert tile.shape == (50, 50, 3) and np.allclose(centroid(tile, RED), (0.3, 0.5), atol=0.05)  # north-up
    data = SplitData.from_dataset(out, "train")
    assert data.seq_frames.shape == (4, 7) and len(data.frame_paths) == 28


# ---------------------------------------------------------------------------------------------- errors


def test_errors_are_clear_and_leave_outputs_alone(tmp_path, capsys):
    src = make_cvusa(tmp_path / "cvusa", n_train=2, n_val=1)
    out = tmp_path / "out"

    def run(*extra):
        code = cli_main(["data", "convert", "--src", str(src), "--out", str(out), "--workers", "1", *extra])
        return code, capsys.readouterr().err

    code, err = run("--format", "kitti")
    assert code == 2 and "unknown --format 'kitti'" in err and "seqgeo, cvusa, vigor" in err
    code, err = run("--format", "vigor")
    assert code == 2 and "not a VIGOR dataset" in err
    (src / "splits" / "val-19zl.csv").unlink()
    code, err = run("--format", "cvusa")
    assert code == 2 and "val-19zl.csv is missing" in err and not out.exists()
    code, err = run("--format", "cvusa", "--split", "test_world")
    assert code == 2 and "no split 'test_world'" in err
    with pytest.raises(SystemExit) as exc:  # argparse: usage + message, exit status 2
        run("--format", "cvusa", "--split", "train", "--heading-deg", "north")
    assert exc.value.code == 2 and "--heading-deg must be a number of degrees or 'random'" in capsys.readouterr().err
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run("--format", "cvusa", "--split", "train")
    assert code == 2 and "--force" in err and [p.name for p in out.iterdir()] == ["keep.txt"]
    code, err = run("--format", "cvusa", "--split", "train", "--force", "--width", "32", "--height", "16",
                    "--tile-px", "16")
    assert code == 0 and not (out / "keep.txt").exists() and read_manifest(out)["splits"] == {"train": 1}


def test_sequences_with_a_missing_image_are_skipped_and_counted_and_limit_caps_splits(tmp_path):
    src = make_cvusa(tmp_path / "cvusa", n_train=4, n_val=3)
    (src / "streetview" / "panos" / "0000101.jpg").unlink()  # a test pair without its panorama
    out = tmp_path / "out"
    assert cli_main(["data", "convert", "--format", "cvusa", "--src", str(src), "--out", str(out), "--width", "32",
                     "--height", "16", "--tile-px", "16", "--workers", "1"]) == 0
    m = read_manifest(out)
    assert m["skipped"]["missing_image"] == 1 and m["splits"] == {"train": 3, "val": 1, "test": 2}
    assert [r.seq for r in read_split(out, "test")] == ["cvusa_0000100", "cvusa_0000102"]
    out2 = tmp_path / "out2"
    assert cli_main(["data", "convert", "--format", "cvusa", "--src", str(src), "--out", str(out2), "--width", "32",
                     "--height", "16", "--tile-px", "16", "--workers", "1", "--limit", "1"]) == 0
    assert read_manifest(out2)["splits"] == {"train": 1, "val": 1, "test": 1}

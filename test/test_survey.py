"""The aerial survey gap: the orthophoto is flown at another time (own sun, season, cars, photometry,
blur, JPEG) and misregistered by a recorded displacement; with the gap off, nothing changes."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from geoloc_ros.bag import read_bag
from geoloc_ros.cli import main as cli_main
from geoloc_ros.core.errors import InvalidArgument
from geoloc_ros.core.images import msg_to_rgb
from geoloc_ros.sim.bag import TOPIC_IMAGE
from geoloc_ros.sim.generate import generate_world, survey_rng
from geoloc_ros.sim.survey import SURVEY_PARTS, ParkedCars, SurveyGap, misregistration_displacement, survey_orthophoto
from geoloc_ros.sim.world import Sem, World, make_toy_world

# sha256 of the orthophoto array and of the camera images of `geoloc sim world --seed 11 --size-m 300` and
# `geoloc sim drive --seed 5 --duration-s 2 --width 128 --height 64`, computed with the code before the
# survey gap existed (commit a70d888). The camera_info fix does not change the images.
REF_ORTHO = "72bafa08c0245344925936cbf07f5b481260d3e046beccb8643f5cf13e224823"
REF_FRAMES = "6f202203940dcc02bb5c7c3771be1cac8dcfc424a0ad34697b9d1aa18be1f8cb"


@pytest.fixture(scope="module")
def gap_world():
    """The 400 m test town (seed 11) with the whole survey gap."""
    return generate_world(seed=11, size_m=400.0, survey=SurveyGap())


def luminance(img):
    return img.astype(float) @ np.array([0.299, 0.587, 0.114])


def test_all_gap_parts_off_reproduce_earlier_worlds_and_drives(tmp_path):
    w, d = tmp_path / "w", tmp_path / "d"
    assert cli_main(["sim", "world", "--out", str(w), "--seed", "11", "--size-m", "300", "--no-survey-gap",
                     "--no-terrain"]) == 0
    world = World.load(w)
    assert hashlib.sha256(np.ascontiguousarray(world.ortho).tobytes()).hexdigest() == REF_ORTHO
    assert cli_main(["sim", "drive", "--world", str(w), "--out", str(d), "--seed", "5", "--duration-s", "2",
                     "--width", "128", "--height", "64", "--no-camera-effects", "--no-suspension"]) == 0
    h = hashlib.sha256()
    for _, _, m in read_bag(d / "bag", [TOPIC_IMAGE]):
        h.update(np.ascontiguousarray(msg_to_rgb(m)).tobytes())
    assert h.hexdigest() == REF_FRAMES


def test_survey_shadows_point_away_from_the_survey_sun(gap_world):
    """Ground just down-sun of buildings (as the survey's own sun casts) is darker than just up-sun of them;
    with the sun turned around the comparison flips."""
    w = gap_world
    az = math.radians(w.survey["sun_azimuth_deg"])
    lum = luminance(w.ortho)
    bld = w.object_id > 0
    ground = np.isin(w.semantic, (Sem.ROAD, Sem.SIDEWALK, Sem.PARKING, Sem.GRASS)) & (w.height == 0)
    k = int(round(2.0 / w.meta.gsd_m))  # 2 m beyond the wall
    # away from the sun: east component -sin(az) -> +col, north component -cos(az) -> +row (rows grow south)
    dr, dc = int(round(math.cos(az) * k)), int(round(-math.sin(az) * k))

    def beside(sign):
        m = np.roll(bld, (sign * dr, sign * dc), axis=(0, 1)) & ground
        return lum[m].mean()

    assert beside(+1) < 0.8 * beside(-1)
    # and it is the survey's sun, not the legacy one drawn from the town's stream
    legacy = generate_world(seed=11, size_m=400.0)
    assert abs(w.survey["sun_azimuth_deg"] - legacy.meta.params["survey_sun_azimuth_deg"]) > 1.0


def test_listed_share_of_parked_cars_differs(gap_world):
    """At least half of the world's lot cars are gone in the survey, as many stand in other stalls, and the
    survey has its own kerb cars; the positions listed in world.json are where the cars changed."""
    w = gap_world
    cars = w.survey["cars"]
    n = cars["world_lot_cars"]
    assert n > 50
    assert cars["removed"] >= 0.5 * n and cars["lot_cars_differ_fraction"] >= 0.5
    assert cars["added_in_lots"] == cars["removed"] and cars["kerb_cars"] > 0
    assert cars["survey_cars_not_in_world_fraction"] >= 0.5
    assert len(cars["removed_xy"]) == cars["removed"] and len(cars["added_xy"]) == cars["added_in_lots"]
    # re-run the survey on the world's layers (same stream) to see its own cars at the listed positions
    res = survey_orthophoto(w.albedo, w.height, w.semantic, w.object_id, w.meta.gsd_m, w.xy_to_rc, w.rc_to_xy,
                            w.roads, w.parked, SurveyGap(), survey_rng(11),
                            legacy_sun=(0.0, 45.0))
    assert res.record["cars"]["removed_xy"] == cars["removed_xy"]

    def sem_at(layer, xy):
        r, c = w.xy_to_rc(np.asarray(xy)[:, 0], np.asarray(xy)[:, 1])
        return layer[r.astype(int), c.astype(int)]

    assert (sem_at(w.semantic, cars["removed_xy"]) == Sem.CAR).all()
    assert (sem_at(res.semantic, cars["removed_xy"]) == Sem.PARKING).all()
    assert (sem_at(w.semantic, cars["added_xy"]) == Sem.PARKING).all()
    assert (sem_at(res.semantic, cars["added_xy"]) == Sem.CAR).all()
    drive_cars = (w.semantic == Sem.CAR).sum()
    same = ((w.semantic == Sem.CAR) & (res.semantic == Sem.CAR)).sum()
    assert same <= 0.5 * drive_cars


def test_measured_misregistration_of_a_marker_equals_the_recorded_one(tmp_path):
    """A white 6 m square painted on the toy world's lawn appears in the saved (blurred, toned, JPEG)
    orthophoto displaced by the recorded d(p), to 0.1 m; and misregistration_displacement reads it back."""
    toy = make_toy_world(size_m=200.0, gsd_m=0.5)
    mx, my = 60.0, -60.0
    n = toy.meta.shape[0]
    g = toy.meta.gsd_m
    X, Y = np.meshgrid(toy.meta.x_min + (np.arange(n) + 0.5) * g, toy.meta.y_max - (np.arange(n) + 0.5) * g)
    marker = (np.abs(X - mx) <= 3.0) & (np.abs(Y - my) <= 3.0)
    toy.albedo[marker] = 250
    res = survey_orthophoto(toy.albedo, toy.height, toy.semantic, toy.object_id, g, toy.xy_to_rc, toy.rc_to_xy,
                            toy.roads, ParkedCars.none(), SurveyGap(season=False, cars=False),
                            np.random.default_rng(4), legacy_sun=(180.0, 45.0))
    toy.ortho, toy.survey = res.ortho, res.record
    toy.save(tmp_path / "toy")
    back = World.load(tmp_path / "toy")
    lum = luminance(back.ortho)
    win = (np.abs(X - mx) <= 8.0) & (np.abs(Y - my) <= 8.0)
    bg = np.median(lum[win & ~((np.abs(X - mx) <= 5.0) & (np.abs(Y - my) <= 5.0))])
    wgt = np.clip(lum - bg, 0, None) * win
    seen = np.array([(wgt * X).sum() / wgt.sum(), (wgt * Y).sum() / wgt.sum()])
    d = np.array(misregistration_displacement(tmp_path / "toy", mx, my), float)
    mis = json.loads((tmp_path / "toy" / "world.json").read_text())["survey"]["misregistration"]
    assert 0.3 <= math.hypot(*mis["shift_m"]) <= 1.5 and 0.0 < mis["warp_amplitude_m"] <= 0.6
    assert np.hypot(*d) > 0.2
    assert np.hypot(*(seen - (np.array([mx, my]) + d))) < 0.1, (seen, d)
    # without misregistration the marker stays put
    res0 = survey_orthophoto(toy.albedo, toy.height, toy.semantic, toy.object_id, g, toy.xy_to_rc, toy.rc_to_xy,
                             toy.roads, ParkedCars.none(), SurveyGap.off(), np.random.default_rng(4),
                             legacy_sun=(180.0, 45.0))
    wgt0 = np.clip(luminance(res0.ortho) - bg, 0, None) * win
    assert np.hypot((wgt0 * X).sum() / wgt0.sum() - mx, (wgt0 * Y).sum() / wgt0.sum() - my) < 0.05
    assert misregistration_displacement(back, 0.0, 0.0) == pytest.approx(
        misregistration_displacement(tmp_path / "toy", 0.0, 0.0))
    assert np.allclose(misregistration_displacement({"survey": None}, 3.0, 4.0), 0.0)


def test_survey_gap_parts_switch_and_validate():
    assert SurveyGap.off().enabled == [] and SurveyGap().enabled == list(SURVEY_PARTS)
    assert "jpeg" not in SurveyGap().without(["jpeg"]).enabled
    assert SurveyGap.from_dict(SurveyGap().to_dict()) == SurveyGap()
    with pytest.raises(InvalidArgument, match="unknown survey part"):
        SurveyGap().without(["clouds"])
    with pytest.raises(InvalidArgument, match="unknown survey key"):
        SurveyGap.from_dict({"sunn": True})
    with pytest.raises(InvalidArgument, match="shift_m"):
        SurveyGap(shift_m=(2.0, 1.0))


def test_season_changes_canopy_and_photometry_changes_colour(gap_world):
    w = gap_world
    legacy = generate_world(seed=11, size_m=400.0)
    tree = w.semantic == Sem.TREE
    diff = np.abs(w.ortho.astype(float) - legacy.ortho.astype(float)).mean(axis=2)
    assert diff[tree].mean() > 10.0  # canopy looks different (season, sun, tone)
    assert w.survey["season"] in ("leaf_off", "spring", "summer", "autumn")
    assert 0.8 <= w.survey["photometric"]["gamma"] <= 1.25
    assert 0.3 <= w.survey["resolution_m"] <= 0.5


def test_world_cli_survey_shift_range_sets_the_misregistration_and_checks_it(tmp_path):
    """`geoloc sim world --survey-shift-m MIN MAX` (NAIP-like offsets): the range reaches the survey
    gap; a reversed or negative range is refused with the field named."""
    from geoloc_ros.sim.survey import Misregistration
    from geoloc_ros.tools.common import parse_with
    from geoloc_ros.tools.sim_world import register, survey_from_args

    args = parse_with(register, ["world", "--out", str(tmp_path / "w"), "--survey-shift-m", "2", "5"])
    gap = survey_from_args(args)
    assert gap.shift_m == (2.0, 5.0) and gap.misregistration
    mags = [math.hypot(*Misregistration.sample(np.random.default_rng(s), gap).shift_m) for s in range(20)]
    assert 2.0 <= min(mags) and max(mags) <= 5.0
    for bad in (["5", "2"], ["-1", "2"]):
        args = parse_with(register, ["world", "--out", str(tmp_path / "w"), "--survey-shift-m", *bad])
        with pytest.raises(InvalidArgument, match="shift_m"):
            survey_from_args(args)

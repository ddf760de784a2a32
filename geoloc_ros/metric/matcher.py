"""Metric matching of one keyframe sequence: BEVs -> local mosaic -> features -> score volume.

``MetricMatcher`` keeps the last ``metric_seq_len`` keyframes (image, BEV and odometry pose).
At a keyframe it places their BEVs into one local BEV in the newest keyframe's vehicle frame
using the odometry between them, fuses the views per cell (``metric_fusion``: attention over the
views' ground resolution, plain mean, or the newest view alone), extracts features, and scores
every (x, y, heading) in the prior's window against the aerial map by FFT correlation. The
result (``MetricResult``) carries the raw cosine volume; the Localizer turns it into the filter's
``core.measurement.PoseVolume`` with the calibrated temperature.

With ``selfcal`` (``metric.selfcal.MountCalibrator``) the keyframes are projected through the
calibrator's corrected mounting (plus each keyframe's predicted dynamic pitch) instead of the
published one, and every ``match`` feeds the calibrator; without it nothing changes.

numpy + OpenCV; the learned extractor brings its own inference backend.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument
from .aerial import AerialMap
from .bev import BevGrid, CameraModel, GroundProjector
from .config import MetricParams
from .correlate import PoseVolumeScores, canvas_for, match_bev, rigid, warp


@dataclass
class _View:
    t: float
    image: np.ndarray
    pose: Optional[Tuple[float, float, float]]  # odometry (x, y, yaw) at the keyframe
    bev: np.ndarray  # [h, w, 3] float32
    valid: np.ndarray  # [h, w] bool
    range_m: np.ndarray  # [h, w] float32
    dyn_pitch: float = 0.0  # road-plane pitch the view was projected with (self-calibration: dynamic pitch)
    accel: float = 0.0  # longitudinal acceleration at the keyframe (m/s^2; self-calibration only)


@dataclass
class MetricResult:
    volume: PoseVolumeScores
    views: int  # keyframes fused
    mosaic: np.ndarray  # [h, w, 3] float32 fused BEV (vehicle frame)
    weight: np.ndarray  # [h, w] feature weights
    grid: BevGrid
    pitch_deg: float = 0.0
    measurement: Optional[object] = None  # core.measurement.PoseVolume the filter got (set by the Localizer)


class MetricMatcher:
    """See the module doc. Not thread-safe: one caller, stamp order."""

    def __init__(self, aerial: AerialMap, extractor, params: Optional[MetricParams] = None,
                 camera: Optional[CameraModel] = None, selfcal=None):
        self.aerial = aerial
        self.fx = extractor
        self.p = params or MetricParams()
        p = self.p
        if abs(aerial.res_m - p.metric_res_m) > 1e-9:
            raise InvalidArgument(f"aerial map resolution {aerial.res_m} m differs from metric_res_m {p.metric_res_m}")
        self.grid = BevGrid(p.metric_res_m, p.metric_bev_x_min_m, p.metric_bev_x_max_m, p.metric_bev_y_half_m)
        self.views: Deque[_View] = deque(maxlen=int(p.metric_seq_len))
        self.projector: Optional[GroundProjector] = None
        # online mounting self-calibration (metric.selfcal.MountCalibrator): keyframes are projected with
        # its corrected camera model and each match feeds it; None: the published model as given
        self.selfcal = selfcal
        self._published: Optional[CameraModel] = None
        if selfcal is not None and p.metric_pitch_search_deg > 0:
            raise InvalidArgument("metric_pitch_search_deg and mounting self-calibration both correct the pitch: "
                                  "use one (set metric_pitch_search_deg to 0 with self-calibration)")
        if camera is not None:
            self.set_camera(camera)

    # ------------------------------------------------------------------ camera and keyframes
    @property
    def camera(self) -> Optional[CameraModel]:
        return None if self.projector is None else self.projector.camera

    def set_camera(self, camera: CameraModel) -> bool:
        """Use this camera model from now on; returns True if it changed (views are cleared). With
        self-calibration ``camera`` is the published model; the projector uses the corrected one."""
        if self.selfcal is not None:
            if self.projector is not None and self._published == camera:
                return False
            self.selfcal.set_published(camera)
            self._published = camera
            self.projector = GroundProjector(self.selfcal.camera_model(), self.grid,
                                             max_range_m=self.p.metric_max_range_m)
            self.views.clear()
            return True
        if self.projector is not None and self.projector.camera == camera:
            return False
        self.projector = GroundProjector(camera, self.grid, max_range_m=self.p.metric_max_range_m)
        self.views.clear()
        return True

    def clear(self) -> None:
        self.views.clear()
        if self.selfcal is not None:  # the odometry chain broke: the yaw's straight-driving window too
            self.selfcal.clear_track()

    def add_keyframe(self, t: float, image: np.ndarray, pose: Optional[Tuple[float, float, float]]) -> None:
        """Project a keyframe (uint8 RGB) and keep it. ``pose``: odometry (x, y, yaw) at ``t``, or
        None (no odometry: the mosaic restarts from this view)."""
        if self.projector is None:
            raise InvalidArgument("no camera model yet (camera_info not received)")
        if self.selfcal is not None:
            self._add_keyframe_calibrated(float(t), image, pose)
            return
        bev, valid = self.projector.project(image)
        if pose is None or any(v.pose is None for v in self.views):
            self.views.clear()
        self.views.append(_View(float(t), image, pose, bev, valid, self.projector.range_map()))

    def _add_keyframe_calibrated(self, t: float, image: np.ndarray, pose) -> None:
        """add_keyframe with self-calibration: the calibrator's current static model, the dynamic
        pitch predicted from the longitudinal acceleration at ``t``."""
        cal = self.selfcal
        cam = cal.camera_model()
        if cam != self.projector.camera:  # the estimate moved: new lookup maps, the kept views stay
            self.projector = GroundProjector(cam, self.grid, max_range_m=self.p.metric_max_range_m)
        if pose is None or any(v.pose is None for v in self.views):
            self.views.clear()
        hist = [(v.t, v.pose) for v in self.views] + [(t, pose)]
        accel = cal.accel_at(t, hist)
        dyn = cal.dynamic_pitch(accel)
        bev, valid = self.projector.project(image, dyn)
        self.views.append(_View(t, image, pose, bev, valid, self.projector.range_map(dyn), dyn, accel))

    def reprojected_mosaic(self, camera: CameraModel, supersample: int = 2, last: int = 0):
        """``mosaic()`` of the kept views (the ``last`` newest ones when > 0) projected again through
        ``camera``, each with its own dynamic pitch: what the self-calibration scores a mounting by."""
        pj = GroundProjector(camera, self.grid, supersample=supersample, max_range_m=self.p.metric_max_range_m)
        views = list(self.views) if self.p.metric_fusion != "single" else list(self.views)[-1:]
        if last > 0:
            views = views[-last:]
        views = [_View(v.t, v.image, v.pose, *pj.project(v.image, v.dyn_pitch), pj.range_map(v.dyn_pitch),
                       v.dyn_pitch, v.accel) for v in views]
        return self._fuse(views)

    # ------------------------------------------------------------------ mosaic
    def mosaic(self, pitch: float = 0.0):
        """Fuse the kept views into the newest view's vehicle frame -> (rgb [h, w, 3], valid [h, w],
        effective range [h, w], BevGrid of the mosaic, number of views). Also what the learned
        extractor's training data is made of (``training.metric_data``)."""
        p = self.p
        views = list(self.views) if p.metric_fusion != "single" else list(self.views)[-1:]
        if pitch != 0.0:
            views = [_View(v.t, v.image, v.pose, *self.projector.project(v.image, pitch),
                           self.projector.range_map(pitch)) for v in views]
        return self._fuse(views)

    def _fuse(self, views):
        p, g = self.p, self.grid
        cur = views[-1]
        rels = []
        back = 0.0
        T_cur_inv = np.linalg.inv(rigid(*cur.pose)) if cur.pose is not None else None
        for v in views:
            rel = np.eye(3) if v is cur or T_cur_inv is None else T_cur_inv @ rigid(*v.pose)
            rels.append(rel)
            back = max(back, -float(rel[0, 2]))
        back = min(back, 4.0 * (g.x_max_m - g.x_min_m))
        gm = g.extended(back) if len(views) > 1 else g
        shape = gm.shape
        P_m = gm.pixel_to_vehicle()
        P_v_inv = np.linalg.inv(g.pixel_to_vehicle())
        rgbs, vals, rngs = [], [], []
        for v, rel in zip(views, rels):
            M = P_v_inv @ np.linalg.inv(rel) @ P_m
            rgbs.append(warp(v.bev, M, shape))
            vals.append(warp(v.valid.astype(np.float32), M, shape) > 0.99)
            rngs.append(warp(v.range_m, M, shape))
        V = np.stack(vals)  # [T, h, w]
        Rg = np.stack(rngs)
        if p.metric_fusion == "attention":
            logit = np.where(V, -Rg / p.metric_attention_range_m, -np.inf)
        else:
            logit = np.where(V, 0.0, -np.inf)
        any_v = V.any(axis=0)
        m = np.where(any_v, logit.max(axis=0), 0.0)
        a = np.where(V, np.exp(logit - m[None]), 0.0)
        a = a / np.maximum(a.sum(axis=0, keepdims=True), 1e-12)
        rgb = np.einsum("thw,thwc->hwc", a, np.stack(rgbs)).astype(np.float32)
        rng = np.sum(a * np.where(V, Rg, 0.0), axis=0).astype(np.float32)
        rng[~any_v] = 1e3
        return rgb, any_v, rng, gm, len(views)

    # ------------------------------------------------------------------ matching
    def window_sizes(self, pos_std_m: float, yaw_std_rad: float) -> Tuple[float, float]:
        """(half-size of the translation window in m, half-range of headings in rad)."""
        p = self.p
        half = float(np.clip(p.metric_window_sigma_k * pos_std_m, p.metric_window_min_m, p.metric_window_max_m))
        yaw = float(np.clip(p.metric_yaw_sigma_k * math.degrees(yaw_std_rad), p.metric_yaw_min_deg,
                            p.metric_yaw_max_deg))
        return half, math.radians(yaw)

    def match(self, x: float, y: float, yaw: float, pos_std_m: float, yaw_std_rad: float) -> MetricResult:
        """Score the kept sequence around the prior (x, y, yaw) in the map frame."""
        if not self.views:
            raise InvalidArgument("no keyframe to match")
        p = self.p
        half_m, yaw_half = self.window_sizes(pos_std_m, yaw_std_rad)
        step = math.radians(p.metric_yaw_step_deg)
        n = int(math.floor(yaw_half / step + 1e-9))
        yaws = yaw + step * np.arange(-n, n + 1)
        pitches = [0.0]
        if p.metric_pitch_search_deg > 0:
            d = math.radians(p.metric_pitch_search_deg)
            pitches = [0.0, -d, d]
        best: Optional[MetricResult] = None
        aerial_cache = {}
        for pitch in pitches:
            rgb, valid, rng, gm, nviews = self.mosaic(pitch)
            vol, weight = self.score(rgb, valid, rng, gm, x, y, yaw, half_m, yaws, aerial_cache)
            res = MetricResult(vol, nviews, rgb, weight, gm, math.degrees(pitch))
            if best is None or _peak(vol) > _peak(best.volume):
                best = res
        if self.selfcal is not None:
            self.selfcal.observe(self, best, x, y, yaw, pos_std_m)
        return best

    def score(self, rgb, valid, rng, gm: BevGrid, x: float, y: float, yaw: float, half_m: float, yaws,
              aerial_cache: Optional[dict] = None) -> Tuple[PoseVolumeScores, np.ndarray]:
        """The cropped score volume of one mosaic (``mosaic()``'s first four) within ``half_m`` of
        (x, y) at headings ``yaws``, and the BEV feature weights."""
        p = self.p
        aerial_cache = {} if aerial_cache is None else aerial_cache
        feats, weight = self.fx.bev(rgb, valid, rng)
        if not float(weight.sum()) > 0:
            raise InvalidArgument("the BEV has no valid cell (camera model or mounting wrong?)")
        # the canvas is centred on the mosaic's centre c0, not on the vehicle: centre the window
        # on where c0 lands for the prior, so the shifts cover the prior window symmetrically
        side, c0 = canvas_for(gm)
        half_px = int(math.ceil(half_m / p.metric_res_m)) + side // 2 + 2
        wx, wy = x + math.cos(yaw) * c0[0], y + math.sin(yaw) * c0[0]
        key = (half_px, round(wx / p.metric_res_m), round(wy / p.metric_res_m))
        if key not in aerial_cache:
            win = self.aerial.window(wx, wy, half_px)
            aerial_cache[key] = (win, self.fx.aerial(win.rgb), _erode(win.valid))
        win, afeats, avalid = aerial_cache[key]
        vol = match_bev(feats, weight, gm, yaws, afeats, avalid, win.x_left, win.y_top,
                        rotate_channels=getattr(self.fx, "rotate_channels", None),
                        min_overlap=p.metric_min_overlap)
        return _crop(vol, x, y, half_m), weight


def _peak(v: PoseVolumeScores) -> float:
    s = v.scores
    return float(np.nanmax(s)) if np.isfinite(s).any() else -np.inf


def _erode(valid: np.ndarray, px: int = 2) -> np.ndarray:
    from .bev import _cv2

    cv2 = _cv2()
    k = 2 * px + 1
    return cv2.erode(valid.astype(np.uint8), np.ones((k, k), np.uint8)) > 0


def _crop(v: PoseVolumeScores, x: float, y: float, half_m: float) -> PoseVolumeScores:
    jx = np.flatnonzero(np.abs(v.xs - x) <= half_m + 1e-6)
    iy = np.flatnonzero(np.abs(v.ys - y) <= half_m + 1e-6)
    if len(jx) == 0 or len(iy) == 0:
        return v
    sl = (slice(None), slice(iy[0], iy[-1] + 1), slice(jx[0], jx[-1] + 1))
    return PoseVolumeScores(v.scores[sl], v.xs[jx[0]:jx[-1] + 1], v.ys[iy[0]:iy[-1] + 1], v.yaws, v.overlap[sl])

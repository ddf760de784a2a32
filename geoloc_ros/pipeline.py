"""The Localizer: camera keyframes + GNSS + odometry -> corrected pose with covariance and status.

Pure Python (numpy + the matcher, encoder and index objects it is given); no rclpy, no wall clock:
time comes in with every call as a stamp in seconds. The ROS node and the bag replay both drive it
through ``runtime.InputRouter`` and build it with ``runtime.build_localizer``::

    loc = build_localizer(LocalizerConfig(...), load_measurements(cfg, orthophoto=...))
    loc.on_fix(t, lat, lon, cov_en, ok)          # NavSatFix
    loc.on_odom(t, x, y, yaw, vx, wz, pose_cov)  # nav_msgs/Odometry (any drifting odom frame)
    est = loc.on_image(t, rgb)                   # Estimate at keyframes, else None
    loc.estimate(t)                              # current state between keyframes

Per keyframe (one per ``keyframe_spacing_m`` of odometry, or per ``keyframe_interval_s``), the
camera's measurement while there is a prior is metric matching when a matcher is given: the
keyframe's bird's-eye view, mosaicked with the previous ones by odometry, scored against the
orthophoto over (x, y, heading) around the filter's prior (``metric``), the volume then updates
the filter (``core.filter``, ``core.measurement.PoseVolume``). Without an orthophoto the
measurement is retrieval: the last T keyframe features fused and searched in the tile index near
the prior (radius from its covariance, clamped to [search_radius_min_m, search_radius_max_m];
heading bins around the filter heading), the whole similarity map updating the filter through the
confidence gate. Beside metric matching, retrieval only relocalises: without a prior (or after a
GNSS jump) its global candidates are verified by metric matching over a short odometry track before
the filter starts there (``metric.verify``); retrieval alone relocalises unverified and publishes it
``lost``. See docs/localizer.md.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Deque, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .core.config import check_keys, params_of
from .core.errors import InvalidArgument
from .core.filter import FilterParams, MatchEval, _f
from .core.geo import heading_deg_to_yaw, yaw_to_heading_deg
from .core.integrity import CameraIntegrity, IntegrityParams, ground_quality
from .core.keyframes import KeyframeBuffer
from .core.mapoffset import MapOffsetParams, open_map_offset
from .core.measurement import PoseVolume
from .core.msgconv import enu_to_grid_cov
from .core.tracker import STATUSES, PoseTracker, TrackState
from .metric.config import MetricParams, check_metric
from .metric.features import GradientFeatures
from .metric.selfcal import SelfCalParams, check_selfcal
from .metric.verify import RelocParams, RelocVerifier, check_reloc, odom_moved, road_lookup, vote_places

log = logging.getLogger(__name__)

ODOM_PATH_STEP_M = 2.0  # the relocalisation road test's odometry path: one point per this much driving

__all__ = ["Localizer", "LocalizerConfig", "Estimate", "Candidates", "SimilarityMap", "STATUSES"]


@dataclass(frozen=True)
class LocalizerConfig(FilterParams, MetricParams, SelfCalParams, IntegrityParams, MapOffsetParams, RelocParams):
    """Every tunable of the Localizer. The filter's fields come from ``core.filter.FilterParams``,
    metric matching's from ``metric.config.MetricParams``, the camera's self-calibration from
    ``metric.selfcal.SelfCalParams``, the camera integrity monitor from ``core.integrity.IntegrityParams``,
    the orthophoto's offset estimator from ``core.mapoffset.MapOffsetParams``, verified relocalisation's
    from ``metric.verify.RelocParams``;
    each field's ``metadata`` has ``help`` and (numbers) an inclusive ``range`` so the ROS node can
    declare it as a parameter (``localizer.<name>``). Unknown keys in ``from_dict`` are an error."""

    _owner: ClassVar[str] = "localizer"
    _group: ClassVar[str] = "localizer"  # camera use and keyframes; retrieval's and metric's own fields say so

    use_camera: bool = _f(True, "use camera matches; false gives the GNSS + odometry baseline (same filter)")
    map_registration_sigma_m: float = _f(0.7, "absolute accuracy of the orthophoto's registration (m, 1-sigma per "
                                         "axis): added to the published covariance while metric matches hold the "
                                         "estimate on the map, or with map_offset_estimate the prior sigma of the "
                                         "learned offset. Set it from your orthophoto's metadata (often 0.5-2 m); "
                                         "0.7 is the simulator's own survey error (a 0.3-1.5 m shift in any "
                                         "direction plus a 0.2-0.6 m warp: 0.69 m RMS per axis)", 0.0, 100.0,
                                         group="metric")
    camera_measurement: str = _f("auto", "the camera's measurement while a prior exists: metric (BEV matched "
                                 "against the orthophoto over x, y, heading; needs a metric matcher), retrieval "
                                 "(tile index similarity map), or auto (metric when a matcher is given)",
                                 choices=("auto", "metric", "retrieval"))
    keyframe_spacing_m: float = _f(5.0, "one keyframe per this distance travelled by odometry (m)", 0.5, 100.0)
    keyframe_interval_s: float = _f(0.5, "one keyframe per this time when there is no odometry (s)", 0.01, 60.0)
    keyframe_max_gap_s: float = _f(5.0, "a longer gap between keyframes breaks the sequence (buffer cleared) (s)",
                                   0.1, 3600.0)
    seq_len: int = _f(7, "keyframes fused per descriptor (T; clamped to the model's max_frames)", 1, 64,
                      group="retrieval")
    min_seq_len: int = _f(3, "fewest keyframes before matching starts", 1, 64, group="retrieval")
    search_sigma_k: float = _f(3.0, "search radius = this many position sigmas of the prior ...", 0.5, 20.0,
                               group="retrieval")
    search_radius_min_m: float = _f(24.0, "... clamped to at least this (m)", 1.0, 10000.0, group="retrieval")
    search_radius_max_m: float = _f(80.0, "... and at most this (m)", 1.0, 100000.0, group="retrieval")
    heading_tol_deg: float = _f(0.0, "heading bins within this of the filter heading are searched (deg); 0: the "
                                "index default (180 / K)", 0.0, 180.0, group="retrieval")
    match_max_yaw_std_deg: float = _f(20.0, "no matching while the heading sigma is above this (deg)", 1.0, 180.0,
                                      group="retrieval")
    candidates_k: int = _f(10, "top-k candidates reported with each estimate", 0, 1000, group="retrieval")
    relocalise: bool = _f(True, "relocalise globally (whole index) when lost and no GNSS gives a prior",
                          group="retrieval")
    relocalise_after_s: float = _f(30.0, "... after this long without an accepted GNSS fix (s)", 0.0, 86400.0,
                                   group="retrieval")
    relocalise_k: int = _f(20, "candidates of the global search that seed the relocalised particle cloud", 1, 10000,
                           group="retrieval")
    relocalise_pos_std_m: float = _f(8.0, "position sigma around each relocalisation candidate (m)", 0.1, 1000.0,
                                     group="retrieval")
    relocalise_yaw_std_deg: float = _f(25.0, "heading sigma around each candidate's heading bin (deg)", 0.1, 180.0,
                                       group="retrieval")

    def __post_init__(self):
        super().__post_init__()
        check_metric(self)
        check_selfcal(self)
        check_reloc(self)
        if self.search_radius_min_m > self.search_radius_max_m:
            raise InvalidArgument(f"localizer.search_radius_min_m ({self.search_radius_min_m}) must not exceed "
                                  f"search_radius_max_m ({self.search_radius_max_m})")
        if self.min_seq_len > self.seq_len:
            raise InvalidArgument(f"localizer.min_seq_len ({self.min_seq_len}) must not exceed seq_len "
                                  f"({self.seq_len})")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LocalizerConfig":
        """Build from a mapping (YAML, JSON); unknown keys raise InvalidArgument naming them."""
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"localizer config must be a mapping, got {type(d).__name__}")
        check_keys(cls, d, "localizer")
        return cls(**dict(d))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def describe(cls) -> List[Dict[str, Any]]:
        """Machine-readable table: name, default, type, help, range, choices, group per field (the
        schema's ``core.config.params_of``, as the ROS parameters and config/geoloc.yaml)."""
        return [{"name": p.name, "default": p.default, "type": p.kind.__name__, "help": p.description,
                 "range": None if p.lo is None and p.hi is None else (p.lo, p.hi), "choices": p.choices,
                 "group": p.group} for p in params_of(cls)]


@dataclass
class Candidates:
    """Top-k tiles of a keyframe's search (best first)."""

    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    heading_deg: np.ndarray


@dataclass
class SimilarityMap:
    """Every tile scored at a keyframe (map frame), for the debug image."""

    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    heading_deg: np.ndarray


@dataclass
class Estimate:
    """The Localizer's output. ``x, y`` in the map frame (``Localizer.frame``, the index datum:
    UTM grid axes), absolute (with ``map_offset_estimate``: the orthophoto-frame estimate plus the
    learned offset); ``yaw`` REP-103 on the grid axes; ``heading_deg`` true compass heading;
    ``cov`` 3x3 over (x, y, yaw) [m^2, m rad, rad^2]; ``ortho_*`` the orthophoto's own frame."""

    t: float
    lat: float
    lon: float
    x: float
    y: float
    yaw: float
    heading_deg: float
    cov: np.ndarray
    status: str
    reasons: List[str]
    candidates: Optional[Candidates] = None
    match_used: bool = False
    confidence: float = float("nan")
    compute_ms: float = 0.0
    sim_map: Optional[SimilarityMap] = None
    keyframe: bool = False
    match_reason: str = ""
    metric: Optional[Any] = None  # metric.matcher.MetricResult of this keyframe (volume, mosaic; for debug)
    # the same pose in the orthophoto's own frame (what the camera matches; a planner on the same
    # orthophoto wants it): x, y, cov as above minus the orthophoto's offset and its covariance.
    # Without the offset estimator: x, y and the filter's covariance (no registration term)
    ortho_x: float = float("nan")
    ortho_y: float = float("nan")
    ortho_cov: Optional[np.ndarray] = None
    map_offset: Optional[Dict[str, Any]] = None  # core.mapoffset diagnostics at the estimate (estimator on)

    @property
    def camera_peak(self):
        """(x, y, yaw) of the camera measurement's own best pose at this keyframe, or None."""
        m = self.metric
        if m is None or getattr(m, "measurement", None) is None:
            return None
        return m.measurement.peak()

    @property
    def pos_std_m(self) -> float:
        return float(math.sqrt(max(np.linalg.eigvalsh(np.asarray(self.cov)[:2, :2])[-1], 0.0)))


@dataclass
class _Measured:
    """What a keyframe's camera measurement gave: the gate's evaluation (None: nothing measured),
    why, the retrieval candidates and similarity map or the metric result (debug, evaluation), and
    whether it waited for a prior (then retrieval may relocalise)."""

    reason: str = ""
    ev: Optional[MatchEval] = None
    candidates: Optional[Candidates] = None
    sim_map: Optional[SimilarityMap] = None
    metric: Any = None
    no_prior: bool = False


class Localizer:
    """See the module docstring. Not thread-safe: call from one thread in stamp order."""

    def __init__(self, encoder, index, config: Optional[LocalizerConfig] = None, *, frame=None, matcher=None):
        if config is None:
            config = LocalizerConfig()
        elif isinstance(config, Mapping):
            config = LocalizerConfig.from_dict(config)
        elif not isinstance(config, LocalizerConfig):
            raise InvalidArgument(f"config must be a LocalizerConfig or a mapping, got {type(config).__name__}")
        self.config = c = config
        mode = c.camera_measurement
        if mode == "auto":
            mode = "metric" if matcher is not None else "retrieval"
        self.metric_matching = c.use_camera and mode == "metric"
        if self.metric_matching and matcher is None:
            raise InvalidArgument("camera_measurement=metric needs a metric matcher (geoloc_ros.metric: the "
                                  "orthophoto); pass matcher=..., or set camera_measurement=retrieval, or "
                                  "use_camera=False for the GNSS + odometry baseline")
        if c.use_camera and not self.metric_matching and (encoder is None or index is None):
            raise InvalidArgument("use_camera=True needs an encoder and a tile index; pass both, or set "
                                  "use_camera=False for the GNSS + odometry baseline")
        if encoder is not None and index is not None and int(encoder.dim) != int(index.dim):
            raise InvalidArgument(f"encoder descriptors have {encoder.dim} dimensions but the index has {index.dim}: "
                                  f"rebuild the index with this model (geoloc index build)")
        self.encoder = encoder
        self.index = index
        self.matcher = matcher if self.metric_matching else None
        # retrieval runs where it is configured, and for global relocalisation beside metric matching
        self.retrieval = c.use_camera and encoder is not None and index is not None
        if index is not None:
            self.frame = index.frame
        elif matcher is not None:
            self.frame = matcher.aerial.frame
        elif frame is not None:
            self.frame = frame
        else:
            raise InvalidArgument("Localizer needs the map frame: pass a tile index, a metric matcher or "
                                  "frame=LocalFrame(...)")
        self.T = int(min(c.seq_len, encoder.max_frames)) if encoder is not None else int(c.seq_len)
        self.tracker = PoseTracker(c)
        self.keyframes = KeyframeBuffer(c.keyframe_spacing_m, c.keyframe_interval_s, max(self.T, 1),
                                        c.keyframe_max_gap_s)
        self._conv_cache: Dict[tuple, float] = {}
        self._counts: Dict[str, Any] = {}
        self._clear_counts()
        self._covered: Optional[bool] = None  # was the prior inside the index at the last keyframe
        self._odom_jumps_seen = 0
        self.integrity = CameraIntegrity(c) if self.metric_matching and c.camera_integrity else None
        self._epoch_seen = self.tracker.epoch
        self._selfcal_saved_at = -1  # accepted self-calibration updates when the vehicle's file was last written
        if self.integrity is not None:
            self.tracker.camera_holds = self.integrity.camera_holds
        # the orthophoto's offset (core.mapoffset): GNSS into the map frame, the published fix out of it
        self.map_offset = open_map_offset(c, self.frame, getattr(getattr(self.matcher, "aerial", None), "imagery",
                                                                 None)) if self.metric_matching else None
        # retrieval proposes, metric matching verifies (metric.verify): with both an orthophoto and an index
        self.verifier = None
        if self.metric_matching and self.retrieval and c.reloc_verify:
            road = road_lookup(self.index, self.frame, self.matcher.aerial.imagery.bounds_latlon())
            self.verifier = RelocVerifier(self.matcher, c, road=road, temperature=self._volume_temperature())
        # the odometry path of the last reloc_road_history_m (odometry frame, every ODOM_PATH_STEP_M): the road test
        self._odom_path: Deque[Tuple[float, float]] = deque(
            maxlen=int(c.reloc_road_history_m / ODOM_PATH_STEP_M) + 1)
        self._reloc_next_t = -math.inf  # no new global search before (after a refusal)
        self._reloc_suspect_until = -math.inf  # a GNSS jump moved the filter: verify it until then (kidnap)
        self._reloc_suspect_since = math.inf
        self._gnss_moves_seen = 0
        self.reloc_log: List[Dict[str, Any]] = []  # the last attempts (candidates, verdict) for pictures, bounded
        self._reloc_votes: List[tuple] = []  # (sequence descriptor, odometry pose, odometry jumps, t) per keyframe

    def set_camera(self, camera) -> None:
        """The camera model (``metric.bev.CameraModel``: camera_info K/D and the mounting). Metric
        matching waits for it; a changed model restarts the keyframe sequence."""
        if self.matcher is not None and self.matcher.set_camera(camera):
            log.info("camera model set: %dx%d", camera.width, camera.height)

    # ------------------------------------------------------------------ bookkeeping
    def _clear_counts(self) -> None:
        self._counts = {"frames": 0, "keyframes": 0, "matches_attempted": 0, "match_skipped": {}, "drops": {},
                        "outside_coverage": 0, "status": {s: 0 for s in STATUSES}, "compute_ms_total": 0.0}

    def _bump(self, group: str, key: str) -> None:
        d = self._counts[group]
        d[key] = d.get(key, 0) + 1

    def _drop(self, key: str, msg: str) -> None:
        self._bump("drops", key)
        log.debug("dropped %s: %s", key, msg)

    def grid_convergence_deg(self, x: float, y: float) -> float:
        """Grid convergence (deg) of the map frame at (x, y), cached per square kilometre: the one
        the Localizer, the node and the replay rotate headings and covariances by."""
        key = (round(x / 1000.0), round(y / 1000.0))
        v = self._conv_cache.get(key)
        if v is None:
            v = float(self.frame.grid_convergence_deg(key[0] * 1000.0, key[1] * 1000.0))
            if len(self._conv_cache) > 1000:
                self._conv_cache.clear()
            self._conv_cache[key] = v
        return v

    def _volume_temperature(self) -> float:
        """Cosine -> log-likelihood of metric matching's volumes: volume_temperature, or (0) the
        extractor's own calibrated value."""
        return self.config.volume_temperature or float(getattr(self.matcher.fx, "volume_temperature",
                                                               GradientFeatures.volume_temperature))

    def _check_time(self, t: float) -> None:
        if not isinstance(t, (int, float, np.integer, np.floating)) or not math.isfinite(float(t)):
            raise InvalidArgument(f"stamp must be a finite number of seconds, got {t!r}")
        last = self.tracker.t_last
        if last is not None and t < last - self.config.time_backwards_eps_s:
            self.reset("time went backwards")

    # ------------------------------------------------------------------ inputs
    def on_fix(self, t: float, lat: float, lon: float, cov_en: Optional[np.ndarray], ok: bool) -> None:
        """A GNSS fix: ``cov_en`` 2x2 east/north covariance (m^2) or None (unknown); ``ok`` False for
        NO_FIX. NaN or out-of-range coordinates are counted and dropped (told to the filter as no fix)."""
        t = float(t)
        self._check_time(t)
        if not ok:
            self.tracker.on_fix(t, None, None, False)
            return
        if not (math.isfinite(lat) and math.isfinite(lon)):
            self._drop("fix.nan", "GNSS fix with NaN position but status OK")
            self.tracker.on_fix(t, None, None, False)
            return
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            self._drop("fix.out_of_range", f"GNSS fix ({lat}, {lon}) is not a latitude/longitude")
            self.tracker.on_fix(t, None, None, False)
            return
        x, y = (float(v) for v in self.frame.from_latlon(lat, lon))
        if not (math.isfinite(x) and math.isfinite(y)):
            self._drop("fix.projection", f"GNSS fix ({lat}, {lon}) cannot be projected into the map frame")
            self.tracker.on_fix(t, None, None, False)
            return
        R = None
        if cov_en is not None:
            C = np.asarray(cov_en, float)
            if C.shape != (2, 2) or not np.all(np.isfinite(C)) or C[0, 0] <= 0 or C[1, 1] <= 0 or \
                    np.linalg.det(C) <= 0:
                self._drop("fix.bad_covariance", f"GNSS covariance {C.tolist()} is not positive definite; using "
                           f"gnss_default_sigma_m")
            else:
                R = enu_to_grid_cov(C, self.grid_convergence_deg(x, y))
        if self.map_offset is None:
            self.tracker.on_fix(t, np.array([x, y]), R, True)
            return
        tr, z = self.tracker, np.array([x, y])
        z_map, R_map = self.map_offset.to_map(z, R)  # the fix in the orthophoto's frame
        if tr.on_fix(t, z_map, R_map, True) in ("init", "accepted", "reanchored"):
            self.map_offset.on_fix(t, z, R if R is not None else np.eye(2) * self.config.gnss_default_sigma_m ** 2,
                                   tuple(tr.odom_last[1:]) if tr.odom_fresh(t) else None)

    def on_odom(self, t: float, x: float, y: float, yaw: float, vx: float = 0.0, wz: float = 0.0,
                pose_cov: Optional[np.ndarray] = None) -> None:
        """Odometry pose in its own (drifting) odom frame. Only increments are used; the pose
        covariance is not (odometry covariances grow without bound; the filter's motion noise is
        configured). Non-finite poses and jumps are counted drops."""
        t = float(t)
        self._check_time(t)
        if not all(math.isfinite(float(v)) for v in (x, y, yaw)):
            self._drop("odom.nonfinite", "odometry pose is not finite")
            return
        jumped = not self.tracker.on_odom(t, float(x), float(y), float(yaw))
        if jumped:
            self._drop("odom.jump", "odometry jumped faster than odom_max_speed_mps; re-anchored")
        if self.verifier is not None:
            path = self._odom_path
            if jumped:
                path.clear()  # a new odometry frame: the old path no longer joins it
            if not path or math.hypot(x - path[-1][0], y - path[-1][1]) >= ODOM_PATH_STEP_M:
                path.append((float(x), float(y)))
        cal = getattr(self.matcher, "selfcal", None)
        if cal is not None and math.isfinite(float(vx)):
            cal.on_odom(t, float(vx))  # the dynamic pitch of braking and accelerating

    def on_image(self, t: float, image: np.ndarray) -> Optional["Estimate"]:
        """A camera frame (uint8 RGB HxWx3). Returns an Estimate if it became a keyframe.

        The steps (as amcl's laserReceived): keyframe? -> features for retrieval when it will run ->
        predict -> the camera measurement (metric: camera model? -> prior? -> measure -> update;
        retrieval: prior? -> search -> update) -> the estimate to publish."""
        t = float(t)
        self._check_time(t)
        img = self._checked_image(image)
        if img is None:
            return None
        self._counts["frames"] += 1
        tr = self.tracker
        odom_dist = tr.odom_dist if tr.odom_fresh(t) else None
        if not self.keyframes.is_keyframe(t, odom_dist):
            return None
        t0 = time.perf_counter()
        feat = self._retrieval_features(t, img)
        self.keyframes.add(t, feat, odom_dist)
        self._counts["keyframes"] += 1
        tr.predict(t)
        got = self._measure(t, img, encoded=feat is not None)
        est = self._make_estimate(t, keyframe=True, candidates=got.candidates, sim_map=got.sim_map, ev=got.ev,
                                  match_reason=got.reason)
        ms = (time.perf_counter() - t0) * 1e3
        self._counts["compute_ms_total"] += ms
        if est is not None:
            est.compute_ms = ms
            est.metric = got.metric
            self._counts["status"][est.status] += 1
        return est

    def _checked_image(self, image) -> Optional[np.ndarray]:
        """The frame as an array, or None (counted) when it is not uint8 RGB of at least 8x8."""
        img = np.asarray(image) if image is not None else None
        if img is None or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 8 or img.shape[1] < 8:
            self._drop("image.bad_shape", f"expected an RGB image HxWx3, got {None if img is None else img.shape}")
            return None
        if img.dtype != np.uint8:
            self._drop("image.bad_dtype", f"expected uint8 RGB, got {img.dtype}")
            return None
        return img

    def _retrieval_features(self, t: float, img: np.ndarray) -> Optional[np.ndarray]:
        """The keyframe's retrieval features when retrieval will use them: as the camera measurement
        (while the prior is inside the index), or beside metric matching to relocalise (while there
        is no credible prior). None saves the encoder pass."""
        if not self.retrieval:
            return None
        if self.metric_matching:
            st = self.tracker.state(t)
            if not (st is None or st.status == "lost" or self._reloc_wanted(t)):
                return None
        elif self._prior_outside_index(t):
            # no tile can be matched here: restart the sequence so that a later descriptor does not
            # mix frames from before and after the gap
            self.keyframes.clear()
            return None
        return self.encoder.frame_features(img[None])[0]

    def _measure(self, t: float, img: np.ndarray, encoded: bool) -> "_Measured":
        """The camera measurement of this keyframe and the filter update (``_Measured``)."""
        if not self.config.use_camera:
            return _Measured(reason="camera disabled")
        if self.metric_matching:
            got = self._match_metric(t, img)
            if self.verifier is not None and encoded and (got.no_prior or self._reloc_wanted(t)):
                return self._relocalise_verified(t, got)
            if got.no_prior and encoded:
                return self._match_retrieval(t)  # no prior: retrieval may relocalise
            return got
        if not encoded:
            return _Measured(reason="outside tile index coverage")
        return self._match_retrieval(t)

    # ------------------------------------------------------------------ metric matching
    def _match_metric(self, t: float, img: np.ndarray) -> "_Measured":
        """Metric matching: camera model? -> the keyframe into the matcher's sequence -> prior? ->
        the volume scored around the prior -> the filter updated with it (``PoseVolume``)."""
        c, tr, m = self.config, self.tracker, self.matcher
        if m.camera is None:
            self._bump("match_skipped", "no camera model")
            return _Measured(reason="no camera model (waiting for camera_info)")
        if (img.shape[1], img.shape[0]) != (m.camera.width, m.camera.height):
            self._drop("image.size_mismatch", f"image {img.shape[1]}x{img.shape[0]} does not match camera_info "
                       f"{m.camera.width}x{m.camera.height}")
            return _Measured(reason="image size differs from camera_info")
        if tr.counters["odom_jumps"] != self._odom_jumps_seen:  # odometry frame jumped: poses do not chain
            self._odom_jumps_seen = tr.counters["odom_jumps"]
            m.clear()
        pose = tuple(tr.odom_last[1:]) if tr.odom_fresh(t) else None
        m.add_keyframe(t, img, pose)
        st = tr.state(t)
        if st is None or st.status == "lost":
            self._bump("match_skipped", "no prior")
            return _Measured(reason="no prior (waiting for GNSS)", no_prior=True)
        if st.yaw_std_deg > c.match_max_yaw_std_deg:
            self._bump("match_skipped", "heading unknown")
            return _Measured(reason=f"heading unknown (sigma {st.yaw_std_deg:.0f} deg)")
        x, y, yaw = (float(v) for v in st.mean)
        self._counts["matches_attempted"] += 1
        res = m.match(x, y, yaw, st.pos_std_m, math.radians(st.yaw_std_deg))
        self._save_selfcal()
        vol = res.volume
        # near the edge of the imagery the unscored cells would read as "unlikely" and drag the
        # estimate inwards: match only where the prior's own position is scored
        j = int(np.argmin(np.abs(vol.xs - x)))
        i = int(np.argmin(np.abs(vol.ys - y)))
        if not np.isfinite(vol.scores[:, i, j]).any():
            self._covered = False
            self._counts["outside_coverage"] += 1
            self._bump("match_skipped", "outside aerial map coverage")
            return _Measured(reason="outside aerial map coverage", metric=res)
        self._covered = True
        temp = self._volume_temperature()
        gate = c.volume_min_posterior_at_peak if c.volume_min_posterior_at_peak >= 0 else \
            float(getattr(m.fx, "min_posterior_at_peak", 0.0))
        meas = res.measurement = PoseVolume(vol.xs, vol.ys, vol.yaws, vol.scores / temp, min_posterior_at_peak=gate)
        if self.integrity is not None:  # may it move the fix? (core.integrity)
            if tr.epoch != self._epoch_seen:  # the filter was (re)initialised: the camera starts on probation
                self._epoch_seen = tr.epoch
                self.integrity.reset()
            fix = tr.last_fix
            gnss = (fix[1], fix[2]) if fix is not None and 0.0 <= t - fix[0] <= c.gnss_timeout_s else None
            v = self.integrity.assess(t, ground_quality(res.mosaic, res.weight), meas, st.mean, st.cov, gnss)
            ev = tr.on_camera(t, meas) if v.use else tr.reject_camera(t, meas, v.key, v.reason)
            after = tr.state(t)
            if after is not None:
                self.integrity.after_update(after.mean)
            self._offset_sample(t, meas, ev)
            return _Measured(ev=ev, reason=ev.reason, metric=res)
        ev = tr.on_camera(t, meas)
        self._offset_sample(t, meas, ev)
        return _Measured(ev=ev, reason=ev.reason, metric=res)

    def _offset_sample(self, t: float, meas, ev: MatchEval) -> None:
        """A used camera match of a trusted camera is a sample of the orthophoto's offset
        (``core.mapoffset``: its own peak against the nearest accepted fix); the sidecar is
        rewritten when due."""
        mo, tr = self.map_offset, self.tracker
        if mo is None or not ev.ok or (self.integrity is not None and self.integrity.state.trust != "trusted"):
            return
        st = tr.state(t)
        if st is None:
            return
        mo.on_camera(t, meas.peak(), float(st.mean[2]), tuple(tr.odom_last[1:]) if tr.odom_fresh(t) else None,
                     st.mean[:2], st.pos_std_m)
        try:
            mo.maybe_save(t)
        except (OSError, InvalidArgument) as exc:
            log.warning("could not write the map offset %s: %s", mo.path, exc)

    # ------------------------------------------------------------------ matching
    def _prior_outside_index(self, t: float) -> bool:
        """True when a credible prior exists and lies outside the index (counted)."""
        st = self.tracker.state(t)
        if st is None or st.status == "lost" or not hasattr(self.index, "covers"):
            return False
        lat, lon = (float(v) for v in self.frame.to_latlon(float(st.mean[0]), float(st.mean[1])))
        if self.index.covers(lat, lon):
            return False
        self._covered = False
        self._counts["outside_coverage"] += 1
        self._bump("match_skipped", "outside tile index coverage")
        return True

    def _match_retrieval(self, t: float) -> "_Measured":
        """Retrieval: sequence long enough? -> prior? (else relocalise when due) -> the tile index
        searched near the prior -> the filter updated with the similarity map (``TileSimilarity``)."""
        c, tr, idx = self.config, self.tracker, self.index
        feats, _ = self.keyframes.sequence(self.T)
        if len(feats) < c.min_seq_len:
            self._bump("match_skipped", "warming up")
            return _Measured(reason=f"warming up ({len(feats)}/{c.min_seq_len} keyframes)")
        st = tr.state(t)
        no_prior = st is None or (st.status == "lost" and (
            tr.t_fix_ok is None or t - tr.t_fix_ok > c.relocalise_after_s))
        if no_prior:
            started = tr.t_first_event if tr.t_first_event is not None else t
            since = t - (tr.t_fix_ok if tr.t_fix_ok is not None else started)
            if c.relocalise and since >= c.relocalise_after_s:
                return self._relocalise(t, feats)
            self._bump("match_skipped", "no prior")
            return _Measured(reason="no prior (waiting for GNSS)", no_prior=True)
        if st.yaw_std_deg > c.match_max_yaw_std_deg:
            self._bump("match_skipped", "heading unknown")
            return _Measured(reason=f"heading unknown (sigma {st.yaw_std_deg:.0f} deg)")
        x, y, yaw = (float(v) for v in st.mean)
        lat, lon = (float(v) for v in self.frame.to_latlon(x, y))
        if hasattr(idx, "covers") and not idx.covers(lat, lon):
            self._covered = False
            self._counts["outside_coverage"] += 1
            self._bump("match_skipped", "outside tile index coverage")
            return _Measured(reason="outside tile index coverage")
        radius = float(np.clip(c.search_sigma_k * st.pos_std_m, c.search_radius_min_m, c.search_radius_max_m))
        heading = float(yaw_to_heading_deg(yaw)) + self.grid_convergence_deg(x, y)
        desc = self.encoder.fuse(feats[None])[0]
        self._counts["matches_attempted"] += 1
        res = idx.search(desc, k=None, near=(lat, lon), radius_m=radius, heading_deg=heading % 360.0,
                         heading_tol_deg=c.heading_tol_deg if c.heading_tol_deg > 0 else None)
        ids = np.asarray(res.ids).reshape(-1)
        scores = np.asarray(res.scores, float).reshape(-1)
        ok = (ids >= 0) & np.isfinite(scores)
        if not ok.any():
            self._covered = False
            self._counts["outside_coverage"] += 1
            self._bump("match_skipped", "outside tile index coverage")
            return _Measured(reason="outside tile index coverage (no tiles within the search radius)")
        self._covered = True
        tx = np.asarray(res.x, float).reshape(-1)[ok]
        ty = np.asarray(res.y, float).reshape(-1)[ok]
        th = np.asarray(res.heading_deg, float).reshape(-1)[ok]
        sc = scores[ok]
        sim = SimilarityMap(x=tx, y=ty, score=sc, heading_deg=th)
        k = min(c.candidates_k, len(sc))
        top = np.argsort(-sc, kind="stable")[:k]
        cands = Candidates(lat=np.asarray(res.lat, float).reshape(-1)[ok][top],
                           lon=np.asarray(res.lon, float).reshape(-1)[ok][top], x=tx[top], y=ty[top], score=sc[top],
                           heading_deg=th[top])
        ev = tr.on_match(t, np.stack([tx, ty], axis=1), sc, float(idx.spacing_m))
        return _Measured(ev=ev, reason=ev.reason, candidates=cands, sim_map=sim)

    def _relocalise(self, t: float, feats: np.ndarray) -> "_Measured":
        """The whole index searched; its best candidates seed the particle cloud."""
        c, idx = self.config, self.index
        desc = self.encoder.fuse(feats[None])[0]
        self._counts["matches_attempted"] += 1
        res = idx.search(desc, k=c.relocalise_k)
        ids = np.asarray(res.ids).reshape(-1)
        sc = np.asarray(res.scores, float).reshape(-1)
        ok = (ids >= 0) & np.isfinite(sc)
        if not ok.any():
            self._bump("match_skipped", "relocalisation found nothing")
            return _Measured(reason="relocalisation: the global search returned nothing")
        tx = np.asarray(res.x, float).reshape(-1)[ok]
        ty = np.asarray(res.y, float).reshape(-1)[ok]
        th = np.asarray(res.heading_deg, float).reshape(-1)[ok]
        conv = self.grid_convergence_deg(float(tx[0]), float(ty[0]))
        yaw = heading_deg_to_yaw(th - conv)
        self.tracker.relocalise(t, np.stack([tx, ty], axis=1), yaw, sc[ok], c.relocalise_pos_std_m,
                                math.radians(c.relocalise_yaw_std_deg))
        cands = Candidates(lat=np.asarray(res.lat, float).reshape(-1)[ok], lon=np.asarray(res.lon, float).reshape(-1)[ok],
                           x=tx, y=ty, score=sc[ok], heading_deg=th)
        return _Measured(reason=f"relocalised globally from {int(ok.sum())} candidates", candidates=cands)

    # ------------------------------------------------------------------ verified relocalisation
    def _reloc_wanted(self, t: float) -> bool:
        """True while verification runs beside a prior: hypotheses are being followed, or a GNSS jump
        (re-anchored after a run of rejected fixes) moved the filter, the camera has not matched near
        the moved estimate since, and that was less than ``reloc_suspect_s`` ago."""
        if self.verifier is None:
            return False
        tr = self.tracker
        moves = tr.counters["gnss_reanchored"]
        if moves != self._gnss_moves_seen:
            self._gnss_moves_seen = moves
            self._reloc_suspect_since = t
            self._reloc_suspect_until = t + self.config.reloc_suspect_s
            self._reloc_next_t = -math.inf
        if tr.last_match_t is not None and tr.last_match_t > self._reloc_suspect_since:
            self._reloc_suspect_until = -math.inf  # the camera agrees with the moved estimate
        return self.verifier.active or t <= self._reloc_suspect_until

    def _relocalise_verified(self, t: float, got: "_Measured") -> "_Measured":
        """Retrieval proposes, metric matching verifies (``metric.verify``): the global top-K tiles
        scored on the BEV mosaic, the best places followed with odometry, the filter initialised at
        a verified pose only. Beside a credible prior (after a GNSS jump) a verified pose that agrees
        with it ends the suspicion; one that does not moves the filter there (kidnap)."""
        c, tr, v = self.config, self.tracker, self.verifier
        if not self.matcher.views:
            return got
        odom = tuple(float(a) for a in tr.odom_last[1:]) if tr.odom_fresh(t) else None
        feats, _ = self.keyframes.sequence(self.T)
        # this keyframe's descriptor joins the vote, while the odometry chains the keyframes and they
        # follow each other (a gap: relocalisation was not running, the old votes are stale)
        jumps = tr.counters["odom_jumps"]
        self._reloc_votes = [e for e in self._reloc_votes if odom is not None and e[2] == jumps and
                             0.0 <= t - self._reloc_votes[-1][3] <= c.keyframe_max_gap_s]
        if odom is not None and len(feats) >= c.min_seq_len:
            self._reloc_votes = (self._reloc_votes + [(self.encoder.fuse(feats[None])[0], odom, jumps, t)])[
                -c.reloc_vote_keyframes:]
        cands = None
        if v.active:
            verdict = v.step(odom, np.asarray(list(self._odom_path) + [odom[:2]]) if odom is not None else None)
        else:
            if len(feats) < c.min_seq_len:
                self._bump("match_skipped", "warming up")
                return dataclasses.replace(got, reason=f"relocalisation warming up ({len(feats)}/{c.min_seq_len} "
                                           f"keyframes)")
            if t < self._reloc_next_t:
                return dataclasses.replace(got, reason=f"relocalisation: next attempt in {self._reloc_next_t - t:.1f} s")
            self._counts["matches_attempted"] += 1
            cands, yaw = self._reloc_candidates(self._reloc_votes or
                                                [(self.encoder.fuse(feats[None])[0], odom, jumps, t)])
            xy = np.stack([cands.x, cands.y], axis=1)
            own = self._reloc_own_places(t, odom)
            if len(own):  # after a GNSS jump: where the filter was before it and where the jump put it
                xy, yaw = np.concatenate([own[:, :2], xy]), np.concatenate([own[:, 2], yaw])
            verdict = v.propose(odom, xy, yaw, 180.0 / float(self.index.heading_bins))
        if verdict.state == "rejected":
            self._reloc_next_t = t + c.reloc_retry_s
        elif verdict.state == "verified":
            self._apply_verified(t, verdict)
        win = verdict.hypotheses[0] if verdict.state == "verified" and verdict.hypotheses else None
        self.reloc_log.append({"t": t, "state": verdict.state, "reason": verdict.describe(), "pose": verdict.pose,
                               "spread_m": verdict.spread_m,
                               "candidates": None if cands is None else np.stack([cands.x, cands.y], axis=1),
                               "places": [(h.x, h.y, h.yaw, h.mean_score) for h in verdict.hypotheses],
                               "track": None if win is None else [p[:2] for p in win.track],
                               "road_path": None if win is None else win.road_path})
        del self.reloc_log[:-200]
        return dataclasses.replace(got, reason=verdict.describe(), candidates=cands if cands is not None
                                   else got.candidates)

    def _reloc_own_places(self, t: float, odom) -> np.ndarray:
        """While a GNSS jump is suspect (``_reloc_wanted``): the estimate before the jump moved on by
        the odometry since, and the estimate now, as places [n, 3] (x, y, yaw) for the verifier
        beside retrieval's (the same test decides between them; a kidnap the odometry cannot explain
        leaves both to fail and retrieval's places to win)."""
        tr = self.tracker
        if odom is None or t > self._reloc_suspect_until or tr.before_reanchor is None:
            return np.zeros((0, 3))
        out = [odom_moved(*tr.before_reanchor, odom)]
        st = tr.state(t)
        if st is not None:
            out.append(tuple(float(v) for v in st.mean))
        return np.asarray(out, float)

    def _reloc_candidates(self, votes: List[tuple]):
        """The places to verify and their map yaw (rad): each keyframe's global top ``reloc_vote_k``
        tiles moved to the current pose with the odometry and pooled (``metric.verify.vote_places``),
        best ``reloc_k``; without odometry the newest descriptor's top ``reloc_k`` tiles."""
        c = self.config
        k = c.reloc_vote_k if votes[-1][1] is not None else c.reloc_k
        res = self.index.search(np.stack([e[0] for e in votes]), k=k)
        searches = []
        for q, (_, odom, _, _) in enumerate(votes):
            ok = (np.asarray(res.ids[q]) >= 0) & np.isfinite(np.asarray(res.scores[q], float))
            x, y = np.asarray(res.x[q], float)[ok], np.asarray(res.y[q], float)[ok]
            conv = self.grid_convergence_deg(float(x[0]), float(y[0])) if len(x) else 0.0
            searches.append((np.stack([x, y], axis=1), heading_deg_to_yaw(np.asarray(res.heading_deg[q], float)[ok] - conv),
                             np.asarray(res.scores[q], float)[ok], odom))
        if votes[-1][1] is None:  # no odometry: the newest keyframe's tiles as they are
            xy, yaw, score = searches[-1][:3]
        else:
            xy, yaw, score = vote_places(searches, votes[-1][1], math.pi / float(self.index.heading_bins), c.reloc_k,
                                         c.reloc_vote_temperature, distinct_m=c.reloc_window_m)
        conv = self.grid_convergence_deg(float(xy[0, 0]), float(xy[0, 1])) if len(xy) else 0.0
        lat, lon = self.frame.to_latlon(xy[:, 0], xy[:, 1]) if len(xy) else (np.zeros(0), np.zeros(0))
        return Candidates(lat=np.asarray(lat, float), lon=np.asarray(lon, float), x=xy[:, 0], y=xy[:, 1],
                          score=np.asarray(score, float), heading_deg=(yaw_to_heading_deg(yaw) + conv) % 360.0), yaw

    def _apply_verified(self, t: float, verdict) -> None:
        """The filter initialised at a verified pose, unless a credible estimate already agrees."""
        c, tr = self.config, self.tracker
        x, y, _ = verdict.pose
        st = tr.state(t)
        self._reloc_suspect_until = -math.inf
        if st is not None and st.status != "lost" and math.hypot(st.mean[0] - x, st.mean[1] - y) <= \
                c.reloc_kidnap_m + 3.0 * st.pos_std_m:
            self._bump("match_skipped", "relocalisation agrees with the estimate")
            return
        modes = np.asarray(verdict.modes, float)  # the winner first, then the aliases it could not rule out
        # as sure as the winner's ground allows (a repetitive road spreads it), never surer than configured
        std = max(c.reloc_init_pos_std_m, verdict.spread_m) if math.isfinite(verdict.spread_m) else \
            c.reloc_init_pos_std_m
        tr.init_verified(t, modes[:, :3], modes[:, 3], std, math.radians(c.reloc_init_yaw_std_deg))
        self._covered = True

    # ------------------------------------------------------------------ outputs
    def _make_estimate(self, t: Optional[float], *, keyframe: bool = False, candidates=None, sim_map=None,
                       ev: Optional[MatchEval] = None, match_reason: str = "") -> Optional[Estimate]:
        st: Optional[TrackState] = self.tracker.state(t)
        if st is None:
            return None
        x, y, yaw = (float(v) for v in st.mean)
        lat, lon = (float(v) for v in self.frame.to_latlon(x, y))
        status, reasons = st.status, list(st.reasons)
        if self.config.use_camera and self._covered is False:
            reasons.append(("outside aerial map coverage" if self.metric_matching else "outside tile index coverage")
                           + " (camera matching off)")
            if status == "tracking":
                status = "degraded"
        if self.tracker.relocalised and status != "lost":
            # seeded from retrieval candidates nobody verified (no orthophoto, or reloc_verify false)
            status = "lost"
            reasons.append("unverified relocalisation: relocalising globally from retrieval alone (no metric "
                           "verification)")
        heading = (float(yaw_to_heading_deg(yaw)) + self.grid_convergence_deg(x, y)) % 360.0
        cov = np.array(st.cov, float)
        gap = self.integrity.disagreement(float(st.t)) if self.integrity is not None else None
        if gap is not None:  # camera and filter disagree, and nothing says which is wrong: cover both
            cov[:2, :2] += np.outer(gap, gap)
            reasons.append(f"camera and GNSS+odometry disagree by {float(np.hypot(*gap)):.1f} m (covariance widened)")
        ortho = (x, y, cov.copy())
        offset, var = None, self.config.map_registration_sigma_m ** 2
        if self.map_offset is not None:  # absolute = the orthophoto frame + its learned offset (core.mapoffset)
            o, var = self.map_offset.offset_at(x, y)
            offset = self.map_offset.diagnostics(x, y)
            x, y = x + float(o[0]), y + float(o[1])
            lat, lon = (float(v) for v in self.frame.to_latlon(x, y))
        if self.metric_matching and self.tracker.last_match_t is not None:
            # metric matches put the filter on the orthophoto, whose own registration error they cannot
            # see: the published covariance adds it (the learned offset's, or the constant's), fading as
            # GNSS takes over without matches (the filter then follows the GNSS, moved by the learned
            # offset with its covariance)
            fade = math.exp(-max(0.0, float(st.t) - self.tracker.last_match_t) / self.config.gnss_bias_tau_s)
            cov[0, 0] += fade * var
            cov[1, 1] += fade * var
        return Estimate(t=float(st.t), lat=lat, lon=lon, x=x, y=y, yaw=yaw, heading_deg=heading,
                        cov=cov, status=status, reasons=reasons, candidates=candidates,
                        match_used=bool(ev is not None and ev.ok),
                        confidence=float(ev.confidence) if ev is not None else float("nan"), sim_map=sim_map,
                        keyframe=keyframe, match_reason=match_reason, ortho_x=ortho[0], ortho_y=ortho[1],
                        ortho_cov=ortho[2], map_offset=offset)

    def estimate(self, t: Optional[float] = None) -> Optional[Estimate]:
        """Current filter state (None before the first GNSS fix or relocalisation). With ``t``, the
        mean is moved by the odometry received since the last filter update (particles unchanged)."""
        if t is not None:
            t = float(t)
            if self.tracker.t_last is not None and t < self.tracker.t_last - self.config.time_backwards_eps_s:
                return self._make_estimate(None)
        return self._make_estimate(t)

    def reset(self, reason: str) -> None:
        """Forget the state (filter, keyframes); counters are kept and the reset is counted."""
        log.info("localizer reset: %s", reason)
        self.tracker.reset(str(reason))
        self.keyframes.clear()
        if self.matcher is not None:
            self.matcher.clear()
        if self.map_offset is not None:
            self.map_offset.forget_time()  # the orthophoto's offset is kept, the receiver's bias is not
        self._covered = None

    def stats(self) -> Dict[str, Any]:
        """Counters: frames, keyframes, matches (used, rejected by reason, skipped by reason), drops by
        reason, GNSS accepted/rejected/no-fix, odometry, resets (by reason), statuses at keyframes."""
        tc = self.tracker.counters
        k = self._counts
        return {"frames": k["frames"], "keyframes": k["keyframes"], "matches_attempted": k["matches_attempted"],
                "matches_used": tc["matches_used"], "matches_rejected": dict(tc["matches_rejected"]),
                "match_skipped": dict(k["match_skipped"]), "drops": dict(k["drops"]),
                "gnss_accepted": tc["gnss_accepted"], "gnss_rejected": tc["gnss_rejected"],
                "gnss_no_fix": tc["gnss_no_fix"], "gnss_reanchored": tc["gnss_reanchored"],
                "gnss_reinit_lost": tc["gnss_reinit_lost"],
                "gnss_reinit_heading": tc["gnss_reinit_heading"],
                "gnss_reinit_bias": tc["gnss_reinit_bias"], "gnss_held_by_camera": tc["gnss_held_by_camera"],
                "odom": tc["odom"], "odom_jumps": tc["odom_jumps"],
                "relocalisations": tc["relocalisations"], "resets": tc["resets"],
                "reset_reasons": dict(self.tracker.reset_reasons), "outside_coverage": k["outside_coverage"],
                "status": dict(k["status"]), "sequence_breaks": self.keyframes.breaks,
                "compute_ms_mean": k["compute_ms_total"] / max(k["keyframes"], 1),
                "relocalisation": self.verifier.diagnostics() if self.verifier is not None else {},
                "camera": self.camera_health(), "map_offset": self.map_offset_health()}

    def map_offset_health(self) -> Dict[str, Any]:
        """The orthophoto's learned offset where the filter is (east, north, sigma, independent
        samples, counters; ``core.mapoffset``), or {} when the estimator is off."""
        mo = self.map_offset
        if mo is None:
            return {}
        st = self.tracker.state()
        x, y = (float(st.mean[0]), float(st.mean[1])) if st is not None else (0.0, 0.0)
        return mo.diagnostics(x, y)

    def save_map_offset(self) -> Optional[str]:
        """Write the offset's sidecar now (end of a replay, node shutdown); its path, or None."""
        mo = self.map_offset
        if mo is None or mo.path is None:
            return None
        try:
            return str(mo.maybe_save(float(self.tracker.t_last or 0.0), force=True) or "") or None
        except (OSError, InvalidArgument) as exc:
            log.warning("could not write the map offset %s: %s", mo.path, exc)
            return None

    def _save_selfcal(self) -> None:
        """The vehicle's calibration file (``camera_selfcal_file``), rewritten atomically every 20 accepted
        self-calibration updates."""
        cal, path = getattr(self.matcher, "selfcal", None), self.config.camera_selfcal_file
        if cal is None or not path:
            return
        n = int(cal.counts["accepted"])
        if n and n % 20 == 0 and n != self._selfcal_saved_at:
            self._selfcal_saved_at = n
            try:
                cal.save(path)
            except OSError as exc:
                log.warning("could not write the camera calibration %s: %s", path, exc)

    def camera_health(self) -> Dict[str, Any]:
        """What /diagnostics says of the camera: the integrity verdict in words (``camera: trusted`` /
        ``camera: degraded (night, 12 % usable ground)``) with its counters, and the self-calibrated
        mounting (estimate and sigma) when self-calibration runs."""
        out: Dict[str, Any] = {}
        if self.integrity is not None:
            out["integrity"] = self.integrity.describe()
            out["trust"] = self.integrity.state.trust
            out["verdicts"] = dict(self.integrity.state.counts)
            q = self.integrity.quality
            if q is not None:
                out["usable_ground_pct"] = round(100.0 * q.usable, 1)
        cal = getattr(self.matcher, "selfcal", None)
        if cal is not None:
            out["selfcal"] = cal.diagnostics()
        return out

"""Ground camera renderer: what a forward camera on the car sees in a synthetic world.

2.5D ray casting over the world's height raster, vectorised with numpy. For each image
column the camera casts one horizontal ray (bearing from ``PinholeCamera.column_bearing``)
and samples it at ``K`` distances (0.25 m steps near the car, geometric steps out to
``max_range_m``). A surface of height ``h`` at horizontal distance ``r`` along the ray of
column bearing ``b`` projects to image row ``cy - fy * (h - mount) / (r cos b)`` (pixel centres at
integer coordinates, ROS / OpenCV): the
same pinhole geometry the orthophoto is georeferenced with, so a building at a known
position appears at the bearing the camera model predicts (``test/test_render.py``).

Per pixel the first sample whose top edge reaches the pixel row is the visible surface
(a running minimum of the top rows along the ray plus one ``searchsorted``). Ground
pixels are re-intersected exactly with the ground plane and sample the albedo
bilinearly; building pixels are intersected exactly with the building's footprint box,
which gives the face, its normal (Lambert shading) and the position on the face
(windows from storey height and window pitch). Trees, cars, sky gradient and distance
haze follow.

Per-drive appearance (``Appearance``, the "capture time") changes the sun direction and
colour, ground shadows (cast for the drive's sun), ambient light, brightness, season
tint of vegetation, haze and parked cars along the kerbs: the orthophoto was captured
at another time, as with real aerial imagery (``sim.survey``).

On a world with terrain (``World.elevation``) the rays are marched against ground + object
height and ground pixels are intersected between the two samples around the hit. A camera
with pitch, roll or lens distortion is rendered as a level pinhole over the window its
pixels need, then remapped (``render_layers``). ``SensorModel`` adds auto exposure,
vignetting and signal-dependent noise; without it the legacy grey noise is kept, so a flat,
level, undistorted camera renders the bytes of earlier versions.

Drive-time conditions (``sim.conditions.Conditions``: traffic, dusk / night, rain / fog, road
changes) render through ``sim.drivetime`` when given (``conditions=``, ``ego=`` the drive's truth,
``render(..., t=)``): into the renderer's own raster copies and images only, never the world.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List, NamedTuple, Tuple

import numpy as np

from ..core.camera import PinholeCamera
from ..core.config import check_keys
from ..core.errors import InvalidArgument
from ..core.tiles import sample_bilinear
from .world import Sem, World, rasterize_box

SEASONS = ("summer", "spring", "autumn", "winter")
# RGB gains applied to vegetation albedo per season
_SEASON_TINT = {
    "summer": (1.0, 1.0, 1.0),
    "spring": (1.05, 1.15, 0.85),
    "autumn": (1.45, 1.0, 0.6),
    "winter": (1.15, 0.95, 0.9),
}
_VEGETATION = (Sem.GRASS, Sem.TREE, Sem.FIELD)
_CAR_COLOURS = np.array([(200, 200, 205), (30, 30, 35), (150, 20, 25), (40, 60, 130), (170, 170, 175),
                         (235, 235, 235), (90, 95, 100), (20, 70, 45)], np.uint8)
_CAR_HEIGHT_M = 1.5
_WINDOW_RGB = np.array([46.0, 56.0, 72.0], np.float32)


@dataclass(frozen=True)
class Appearance:
    """Capture conditions of one drive.

    ``sun_azimuth_deg`` is clockwise from grid north, ``sun_elevation_deg`` above the horizon;
    ``haze_m`` is the distance at which 63 % of the colour is haze;
    ``parked_car_density`` is the fraction of kerb slots holding a parked car.
    """

    sun_azimuth_deg: float = 180.0
    sun_elevation_deg: float = 45.0
    sun_rgb: Tuple[float, float, float] = (1.0, 0.97, 0.9)
    ambient: float = 0.4
    brightness: float = 1.0
    season: str = "summer"
    haze_m: float = 400.0
    parked_car_density: float = 0.3
    seed: int = 0

    def __post_init__(self):
        if not (0.0 <= self.sun_azimuth_deg <= 360.0):
            raise InvalidArgument(f"sun_azimuth_deg {self.sun_azimuth_deg} is outside 0..360")
        if not (2.0 <= self.sun_elevation_deg <= 90.0):  # dusk (Conditions) goes down to 3 deg; night: Conditions
            raise InvalidArgument(f"sun_elevation_deg {self.sun_elevation_deg} is outside 2..90 (no night scenes)")
        if len(self.sun_rgb) != 3 or not all(0.0 < c <= 1.5 for c in self.sun_rgb):
            raise InvalidArgument(f"sun_rgb {self.sun_rgb} must be three gains in (0, 1.5]")
        if not (0.0 <= self.ambient <= 1.0):
            raise InvalidArgument(f"ambient {self.ambient} is outside 0..1")
        if not (0.2 <= self.brightness <= 3.0):
            raise InvalidArgument(f"brightness {self.brightness} is outside 0.2..3")
        if self.season not in SEASONS:
            raise InvalidArgument(f"season {self.season!r} is not one of {', '.join(SEASONS)}")
        if not (20.0 <= self.haze_m <= 1e6):
            raise InvalidArgument(f"haze_m {self.haze_m} is outside 20..1e6")
        if not (0.0 <= self.parked_car_density <= 1.0):
            raise InvalidArgument(f"parked_car_density {self.parked_car_density} is outside 0..1")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Appearance":
        """Random daytime conditions (northern hemisphere: the sun is east, south or west)."""
        el = float(rng.uniform(12.0, 65.0))
        warm = max(0.0, (30.0 - el) / 30.0)  # low sun is warmer
        return cls(
            sun_azimuth_deg=float(rng.uniform(90.0, 270.0)),
            sun_elevation_deg=el,
            sun_rgb=(1.0, round(0.97 - 0.12 * warm, 4), round(0.9 - 0.3 * warm, 4)),
            ambient=float(rng.uniform(0.3, 0.55)),
            brightness=float(rng.uniform(0.75, 1.2)),
            season=str(rng.choice(SEASONS, p=[0.4, 0.2, 0.25, 0.15])),
            haze_m=float(rng.uniform(180.0, 900.0)),
            parked_car_density=float(rng.uniform(0.0, 0.6)),
            seed=int(rng.integers(0, 2 ** 31 - 1)),
        )

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["sun_rgb"] = list(self.sun_rgb)
        return d

    @classmethod
    def from_dict(cls, d: Dict) -> "Appearance":
        check_keys(cls, d, "appearance")
        d = dict(d)
        if "sun_rgb" in d:
            d["sun_rgb"] = tuple(float(c) for c in d["sun_rgb"])
        return cls(**d)

    def sun_vector(self) -> np.ndarray:
        """Unit vector towards the sun in local (east, north, up)."""
        az, el = math.radians(self.sun_azimuth_deg), math.radians(self.sun_elevation_deg)
        return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])


def park_kerb_cars(roads, xy_to_rc, gsd: float, height: np.ndarray, sem: np.ndarray, albedo: np.ndarray,
                   rng: np.random.Generator, density: float) -> List[Tuple[float, float, float]]:
    """Park cars along both kerbs of every street, half on the kerb, away from junctions: a slot every
    6.5 m holds a car with probability ``density``. Paints ``height``, ``sem`` and ``albedo`` in place
    (only where the car stands on road, sidewalk or grass) and returns the cars' (x, y, yaw)."""
    if density <= 0:
        return []
    out = []
    shape = height.shape
    for e in range(roads.num_edges):
        pts = roads.edge_points[e]
        if len(pts) < 2:
            continue
        seg = np.diff(pts, axis=0)
        seglen = np.hypot(*seg.T)
        cum = np.concatenate([[0.0], np.cumsum(seglen)])
        total = cum[-1]
        offset = float(roads.edge_width[e]) / 2.0 + 0.2
        for s in np.arange(14.0, total - 14.0, 6.5):
            for side in (-1.0, 1.0):
                if rng.random() >= density:
                    continue
                i = min(int(np.searchsorted(cum, s, side="right")) - 1, len(seg) - 1)
                t = (s - cum[i]) / max(seglen[i], 1e-9)
                px, py = pts[i] + t * seg[i]
                yaw = math.atan2(seg[i][1], seg[i][0])
                cx = px + side * offset * -math.sin(yaw)
                cy = py + side * offset * math.cos(yaw)
                box = rasterize_box(shape, xy_to_rc, cx, cy, 2.2, 0.9, yaw, gsd)
                if box is None:  # the kerb runs off the raster (a road at the world's edge)
                    continue
                r0, c0, m, _, _ = box
                if not m.any():
                    continue
                win = (slice(r0, r0 + m.shape[0]), slice(c0, c0 + m.shape[1]))
                # only where the car stands on road or sidewalk (not into a building, tree or lot)
                ok = m & np.isin(sem[win], (Sem.ROAD, Sem.SIDEWALK, Sem.MARKING, Sem.GRASS))
                if ok.sum() < 0.7 * m.sum():
                    continue
                height[win][ok] = _CAR_HEIGHT_M
                sem[win][ok] = Sem.CAR
                albedo[win][ok] = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
                out.append((float(cx), float(cy), float(yaw)))
    return out


@dataclass(frozen=True)
class SensorModel:
    """The camera's exposure and noise (what turns scene radiance into 8-bit values).

    Auto exposure scales the frame towards a mean luminance of ``exposure_target`` (0..1 of full
    scale), compensating ``exposure_strength`` of the difference (0: fixed exposure, 1: full), with
    a per-frame error of ``exposure_jitter`` (relative, 1 sigma); bright sky and facades clip at 255.
    Lens vignetting darkens the corners by ``vignetting``. Noise per pixel and channel: photon (shot)
    noise of variance ``shot_noise`` x signal plus read noise ``read_noise`` (DN, 1 sigma).
    """

    exposure_target: float = 0.42
    exposure_strength: float = 0.6
    exposure_jitter: float = 0.04
    vignetting: float = 0.2
    shot_noise: float = 0.5
    read_noise: float = 1.5

    def __post_init__(self):
        for name, lo, hi in (("exposure_target", 0.05, 0.95), ("exposure_strength", 0.0, 1.0),
                             ("exposure_jitter", 0.0, 0.5), ("vignetting", 0.0, 0.9), ("shot_noise", 0.0, 20.0),
                             ("read_noise", 0.0, 50.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise InvalidArgument(f"sensor.{name} must be a number in {lo:g}..{hi:g}, got {v!r}")

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "SensorModel":
        check_keys(cls, d, "sensor")
        return cls(**d)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Float radiance [H, W, 3] (0..255 scale) -> exposed, vignetted, noisy float image."""
        H, W = img.shape[:2]
        lum = float(np.mean(img @ np.array([0.299, 0.587, 0.114], np.float32)))
        gain = (255.0 * self.exposure_target / max(lum, 1.0)) ** self.exposure_strength
        gain *= float(np.exp(rng.normal(0.0, self.exposure_jitter)))
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        rad2 = ((xx - (W - 1) / 2) ** 2 + (yy - (H - 1) / 2) ** 2) / (((W - 1) / 2) ** 2 + ((H - 1) / 2) ** 2)
        out = img * (np.float32(gain) * (1.0 - np.float32(self.vignetting) * rad2))[..., None]
        sigma = np.sqrt(self.shot_noise * np.clip(out, 0.0, 255.0) + self.read_noise ** 2)
        return out + sigma * rng.standard_normal(out.shape).astype(np.float32)


class RenderLayers(NamedTuple):
    image: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 horizontal distance along the ray (m); inf for sky
    semantic: np.ndarray  # [H, W] uint8 Sem class; 255 for sky
    object_id: np.ndarray  # [H, W] int32 building id (1..N) or 0


SKY = 255


def ray_distances(max_range_m: float = 300.0, near_step_m: float = 0.25, near_m: float = 40.0,
                  ratio: float = 1.012) -> np.ndarray:
    """Sample distances along a ray: fine steps near the car, geometric steps further out."""
    near = np.arange(0.5, near_m, near_step_m)
    n_far = int(math.ceil(math.log(max_range_m / near_m) / math.log(ratio)))
    far = near_m * ratio ** np.arange(n_far + 1)
    return np.concatenate([near, far[far <= max_range_m * ratio]])


class GroundRenderer:
    """Renders camera frames of ``world`` for one drive's ``appearance``.

    Construction prepares per-drive layers (parked cars, season tint, shadows for the
    drive's sun): about a second for a 2 km world. ``render`` is then ~10 ms a frame.
    """

    def __init__(self, world: World, camera: PinholeCamera, appearance: Appearance | None = None,
                 max_range_m: float = 300.0, sensor: "SensorModel | None" = None, conditions=None, ego=None):
        if world.height is None or world.semantic is None or world.albedo is None:
            raise InvalidArgument("the renderer needs the world's height, semantic and albedo layers")
        self.world = world
        self.camera = camera
        self.appearance = appearance or Appearance()
        # drive-time conditions (sim.conditions.Conditions; ego: the drive's truth sim.drive.Trajectory):
        # None, or none the camera sees, renders the bytes of a renderer without them
        self._scene = None
        if conditions is not None:
            from .drivetime import DriveTime, affects_camera

            if affects_camera(conditions):
                self._scene = DriveTime(conditions, self.appearance, world, ego)
                self.appearance = self._scene.appearance  # the light it is rendered with (e.g. a dusk sun)
        self.sensor = sensor  # None: the legacy fixed exposure and grey Gaussian noise (sigma 2)
        self.elevation = getattr(world, "elevation", None)  # terrain (m above the datum) or None: flat
        self.max_range_m = float(max_range_m)
        self._r = ray_distances(self.max_range_m)
        self._prepare_layers()
        if self._scene is not None:
            self._scene.prepare(self)
        u = np.arange(camera.width)
        self._bearing = camera.column_bearing(u)  # [W]
        self._cosb = np.cos(self._bearing)
        self._vc = np.arange(camera.height, dtype=np.float64) - camera.cy  # row centre - cy  [H]

    # ---- per-drive layers ---------------------------------------------------------------
    def _prepare_layers(self) -> None:
        from .generate import cast_shadows

        w, app = self.world, self.appearance
        rng = np.random.default_rng(app.seed)
        self.height = w.height.copy()
        self.sem = w.semantic.copy()
        albedo = w.albedo.astype(np.float32)
        veg = np.isin(self.sem, _VEGETATION)
        albedo[veg] *= np.asarray(_SEASON_TINT[app.season], np.float32)
        self.parked_cars = self._park_cars(rng, albedo)
        self.albedo = np.clip(albedo, 0, 255).astype(np.uint8)
        surface = self.height if w.elevation is None else self.height + w.elevation
        self.shadow = cast_shadows(surface, w.meta.gsd_m, app.sun_azimuth_deg, app.sun_elevation_deg)
        sun = app.sun_vector()
        self._sun = sun
        self._sun_rgb = np.asarray(app.sun_rgb, np.float32)
        direct = 1.0 - app.ambient
        # normalise like the orthophoto's shading: flat sunlit ground keeps its albedo
        self._norm = 1.0 / (app.ambient + direct * sun[2])
        self._direct = direct

    def _park_cars(self, rng: np.random.Generator, albedo: np.ndarray) -> int:
        """Parked cars along both kerbs of every street (``park_kerb_cars``) for this drive."""
        w = self.world
        return len(park_kerb_cars(w.roads, w.xy_to_rc, w.meta.gsd_m, self.height, self.sem, albedo, rng,
                                  self.appearance.parked_car_density))

    # ---- rendering ----------------------------------------------------------------------
    def render(self, x: float, y: float, yaw: float, *, z: float | None = None, pitch: float = 0.0,
               roll: float = 0.0, t: float | None = None) -> np.ndarray:
        """RGB uint8 [H, W, 3] seen from (x, y) metres at ``yaw`` rad (CCW from east); see ``render_layers``."""
        return self.render_layers(x, y, yaw, z=z, pitch=pitch, roll=roll, t=t).image

    def realisation(self) -> Dict:
        """What the drive-time conditions drew (JSON-able; ``{}`` without conditions the camera sees)."""
        return self._scene.realisation() if self._scene is not None else {}

    def ground_z(self, x, y) -> np.ndarray:
        """Terrain elevation (m) at local (x, y); 0 on a flat world."""
        if self.elevation is None:
            return np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape)
        rr, cc = self.world.xy_to_rc(x, y)
        return sample_bilinear(self.elevation, rr, cc, fill=float(np.mean(self.elevation)))

    def render_layers(self, x: float, y: float, yaw: float, *, z: float | None = None, pitch: float = 0.0,
                      roll: float = 0.0, t: float | None = None) -> RenderLayers:
        """Image plus per-pixel depth, semantic class and building id (for tests and debugging).

        (x, y, z): camera position (local metres; z above the terrain datum, default: the ground
        under the camera plus ``mount_height_m``); the camera_link attitude is REP-103
        R = Rz(yaw) Ry(pitch) Rx(roll) (x forward, y left, z up; pitch > 0 looks down, roll > 0
        lowers the right side). A level pinhole camera is ray-cast directly; a tilted or distorted
        one is ray-cast as a level pinhole over the window its pixels need, then resampled (a
        rotation about the centre of projection is exact as a remap). ``depth`` is the horizontal
        distance along the ray. ``t``: seconds since the drive's start (traffic, lens drops, motion blur).
        """
        if not all(math.isfinite(v) for v in (x, y, yaw, pitch, roll, 0.0 if z is None else z)):
            raise InvalidArgument(f"camera pose ({x}, {y}, {z}, yaw {yaw}, pitch {pitch}, roll {roll}) is not finite")
        cam = self.camera
        cz = cam.mount_height_m if z is None and self.elevation is None else \
            (float(self.ground_z(x, y)) + cam.mount_height_m if z is None else float(z))
        scene = self._scene
        saved = scene.enter(self, x, y, yaw, t) if scene is not None else None
        try:
            if pitch == 0.0 and roll == 0.0 and not cam.distorted:
                img, depth, sem, oid = self._march_scene(x, y, yaw, self._bearing, self._vc, cz)
            else:
                uu, vv = self._leveled_coords(pitch, roll)
                u0, v0 = int(math.floor(uu.min())) - 1, int(math.floor(vv.min())) - 1
                cols = np.arange(u0, int(math.ceil(uu.max())) + 2)
                rows = np.arange(v0, int(math.ceil(vv.max())) + 2)
                lev = self._march_scene(x, y, yaw, cam.column_bearing(cols), rows - cam.cy, cz)
                r, c = vv - v0, uu - u0
                img = sample_bilinear(lev[0], r + 0.5, c + 0.5)  # sample_bilinear: pixel (r, c) spans [r, r+1)
                ri, ci = np.rint(r).astype(np.int64), np.rint(c).astype(np.int64)
                depth, sem, oid = lev[1][ri, ci], lev[2][ri, ci], lev[3][ri, ci]
        finally:
            if scene is not None:
                scene.leave(self, saved)
        if scene is not None:
            img = scene.camera(self, img, depth, x, y, yaw, t)
        return RenderLayers(self._expose(img, x, y, yaw), depth, sem, oid)

    def _march_scene(self, x: float, y: float, yaw: float, bearing: np.ndarray, vcs: np.ndarray, cz: float):
        """``_march`` plus the drive-time conditions' light, weather and sky on the level image."""
        lev = self._march(x, y, yaw, bearing, vcs, cz)
        if self._scene is not None:
            self._scene.level(self, lev[0], lev[1], lev[2], x, y, yaw, bearing, vcs, cz)
        return lev

    def _leveled_coords(self, pitch: float, roll: float) -> Tuple[np.ndarray, np.ndarray]:
        """Where each pixel of the (distorted, tilted) camera looks in the level pinhole camera's pixels."""
        cam = self.camera
        u, v = np.meshgrid(np.arange(cam.width, dtype=float), np.arange(cam.height, dtype=float))
        xn, yn = cam.undistort((u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy)
        d = np.stack([np.ones_like(xn), -xn, -yn], axis=-1)  # camera_link: x forward, y left, z up
        cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
        R = np.array([[cp, sp * sr, sp * cr], [0.0, cr, -sr], [-sp, cp * sr, cp * cr]])  # Ry(pitch) Rx(roll)
        dl = d @ R.T
        return cam.cx - cam.fx * dl[..., 1] / dl[..., 0], cam.cy - cam.fy * dl[..., 2] / dl[..., 0]

    def _expose(self, img: np.ndarray, x: float, y: float, yaw: float) -> np.ndarray:
        """Float radiance -> uint8: brightness, then the sensor (``SensorModel``) or the legacy noise."""
        app = self.appearance
        img = img * app.brightness
        # deterministic per drive and pose
        seed = [app.seed & 0x7FFFFFFF, int(round(x * 100)) & 0xFFFFFFFF, int(round(y * 100)) & 0xFFFFFFFF,
                int(round(yaw * 1e4)) & 0xFFFFFFFF]
        rng = np.random.default_rng(seed)
        if self.sensor is None:
            img += rng.normal(0.0, 2.0, img.shape[:2]).astype(np.float32)[..., None]
        else:
            img = self.sensor.apply(img, rng)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)

    def _march(self, x: float, y: float, yaw: float, bearing: np.ndarray, vcs: np.ndarray, cz: float):
        """Ray-cast a level pinhole camera at (x, y, height cz) over columns of ``bearing`` and rows at
        ``vcs`` (row - cy): float image (before exposure), depth, semantic, object id."""
        cam, w = self.camera, self.world
        Hpx, Wpx = len(vcs), len(bearing)
        fy = cam.fy
        terrain = self.elevation is not None
        mount = cz  # camera height above the flat ground; with terrain: above the datum
        theta = yaw + bearing  # [W] ray direction (rad CCW from east)
        dx, dy = np.cos(theta), np.sin(theta)
        cosb_w = np.cos(bearing)
        r = self._r  # [K]
        K = len(r)
        sx = x + dx[:, None] * r[None, :]  # [W, K]
        sy = y + dy[:, None] * r[None, :]
        rr, cc = w.xy_to_rc(sx, sy)
        ri, ci = np.floor(rr).astype(np.int64), np.floor(cc).astype(np.int64)
        nrow, ncol = self.height.shape
        inside = (ri >= 0) & (ri < nrow) & (ci >= 0) & (ci < ncol)
        ri_c, ci_c = np.clip(ri, 0, nrow - 1), np.clip(ci, 0, ncol - 1)
        h = np.where(inside, self.height[ri_c, ci_c], 0.0)  # [W, K]
        z = r[None, :] * cosb_w[:, None]  # camera-frame depth of each sample  [W, K]
        if terrain:
            e = sample_bilinear(self.elevation, rr, cc, fill=float(np.mean(self.elevation)))  # [W, K]
            top = cam.cy - fy * (e + h - mount) / z
        else:
            top = cam.cy - fy * (h - mount) / z  # image row of the sample's top edge
        cummin = np.minimum.accumulate(top, axis=1)
        # first sample k with cummin[k] <= row centre: searchsorted on -cummin (non-decreasing), per column
        key = (-cummin + (np.arange(Wpx) * 1e7)[:, None]).ravel()
        rows = vcs + cam.cy  # row centres
        q = (-rows[:, None] + (np.arange(Wpx) * 1e7)[None, :])  # [H, W]
        flat = np.searchsorted(key, q.ravel(), side="left").reshape(Hpx, Wpx)
        k = flat - (np.arange(Wpx) * K)[None, :]  # [H, W]
        sky = k >= K
        kc = np.minimum(k, K - 1)
        col = np.broadcast_to(np.arange(Wpx)[None, :], (Hpx, Wpx))
        hit_h = h[col, kc]
        hit_in = inside[col, kc]
        obstacle = ~sky & (hit_h > 0.05)
        ground = ~sky & ~obstacle

        sem = np.full((Hpx, Wpx), SKY, np.uint8)
        oid = np.zeros((Hpx, Wpx), np.int32)
        depth = np.full((Hpx, Wpx), np.inf, np.float32)
        img = np.zeros((Hpx, Wpx, 3), np.float32)
        vc = vcs[:, None]  # [H, 1]
        cosb = cosb_w[None, :]  # [1, W]

        # ground: exact plane intersection (flat) or the crossing between the two samples around the hit
        if terrain:
            kp = np.maximum(kc - 1, 0)
            r1, r0 = r[kc], np.where(kc > 0, r[kp], 0.0)
            f1 = mount - vc * (r1 * cosb) / fy - e[col, kc]
            f0 = np.where(kc > 0, mount - vc * (r0 * cosb) / fy - e[col, kp], mount - float(self.ground_z(x, y)))
            with np.errstate(divide="ignore", invalid="ignore"):
                rg = np.where(f0 - f1 > 1e-9, r0 + (r1 - r0) * f0 / (f0 - f1), r1)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                rg = fy * mount / (vc * cosb)  # [H, W]
        rg = np.where(ground, rg, 0.0)
        gx = x + np.cos(theta)[None, :] * rg
        gy = y + np.sin(theta)[None, :] * rg
        nrow, ncol = self.height.shape
        if ground.any():
            grr, gcc = w.xy_to_rc(gx[ground], gy[ground])
            alb = sample_bilinear(self.albedo, grr, gcc, fill=float(np.mean(self.albedo[..., 1])))
            gri = np.clip(np.floor(grr).astype(np.int64), 0, nrow - 1)
            gci = np.clip(np.floor(gcc).astype(np.int64), 0, ncol - 1)
            lit = ~self.shadow[gri, gci]
            light = self._norm * (self.appearance.ambient + self._direct * self._sun[2] * lit)
            img[ground] = alb * (light[:, None] * self._lightcol(lit))
            sem[ground] = self.sem[gri, gci]
            depth[ground] = rg[ground]

        # obstacles: buildings, trees, cars
        if obstacle.any():
            ob_r = np.broadcast_to(r[None, :], (Wpx, K))[col, kc]  # sample distance  [H, W]
            orow, ocol = ri_c[col, kc], ci_c[col, kc]
            osem = np.where(hit_in, self.sem[orow, ocol], Sem.GRASS)
            ids = w.object_id[orow, ocol] if w.object_id is not None else np.zeros_like(orow, np.int32)
            building = obstacle & (ids > 0) & (osem == Sem.BUILDING)
            other = obstacle & ~building
            dist = np.where(obstacle, ob_r, 0.0)
            # camera height above the ground at the hit (flat: the mount height)
            above = mount - e[col, kc] if terrain else mount
            if building.any():
                self._shade_buildings(img, dist, building, ids, x, y, dx, dy, vc, cosb,
                                      above[building] if terrain else above)
                oid[building] = ids[building]
            if other.any():
                self._shade_vegetation_and_cars(img, dist, other, osem, orow, ocol, vc, cosb, x, y, dx, dy,
                                                above[other] if terrain else above)
            sem[obstacle] = osem[obstacle]
            depth[obstacle] = dist[obstacle]

        # sky gradient (lighter at the horizon), then distance haze
        app = self.appearance
        haze_rgb = np.array([200.0, 208.0, 215.0], np.float32) * min(1.0, 0.85 + 0.3 * app.ambient)
        if sky.any():
            elev = np.clip(-vc / fy, 0.0, None)  # tan of elevation of the row
            t = np.clip(elev / 0.6, 0.0, 1.0)
            zenith = np.array([95.0, 140.0, 205.0], np.float32)
            sky_rgb = haze_rgb[None, :] * (1 - t) + zenith[None, :] * t  # [H, 3]
            img[sky] = np.broadcast_to(sky_rgb[:, None, :], (Hpx, Wpx, 3))[sky]
        fin = ~sky
        fog = np.where(fin, 1.0 - np.exp(-np.where(fin, depth, 0.0) / app.haze_m), 0.0).astype(np.float32)
        far = fin & (depth > self.max_range_m)
        fog[far] = 1.0
        img = img * (1 - fog[..., None]) + haze_rgb * fog[..., None]
        return img, depth, sem, oid

    def _lightcol(self, lit: np.ndarray) -> np.ndarray:
        """Colour of the light per pixel: sun colour where lit, neutral ambient in shade."""
        return np.where(lit[:, None], self._sun_rgb[None, :], np.float32(1.0))

    def _shade_buildings(self, img, dist, mask, ids, x, y, dx, dy, vc, cosb, above) -> None:
        """Exact ray/footprint intersection per building pixel: face, normal, windows, roof."""
        b = self.world.buildings
        cam = self.camera
        i = ids[mask] - 1
        cols = np.nonzero(mask)[1]
        rdx, rdy = dx[cols], dy[cols]
        c, s = np.cos(b.yaw[i]), np.sin(b.yaw[i])
        ox, oy = x - b.cx[i], y - b.cy[i]
        # ray origin and direction in the building frame (u along the axis, v across)
        ou, ov = ox * c + oy * s, -ox * s + oy * c
        du, dv = rdx * c + rdy * s, -rdx * s + rdy * c
        hl, hw = b.half_len[i], b.half_wid[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            tu1, tu2 = (-hl - ou) / du, (hl - ou) / du
            tv1, tv2 = (-hw - ov) / dv, (hw - ov) / dv
        tu_in = np.nan_to_num(np.minimum(tu1, tu2), nan=-np.inf)
        tv_in = np.nan_to_num(np.minimum(tv1, tv2), nan=-np.inf)
        u_face = tu_in >= tv_in  # entered through an end wall (normal along u)
        t_hit = np.maximum(tu_in, tv_in)
        sample = dist[mask]
        # trust the exact hit when it is consistent with the ray march, else keep the sample distance
        ok = np.isfinite(t_hit) & (t_hit > 0) & (t_hit <= sample + 1.0) & (t_hit >= sample - 2.0)
        t = np.where(ok, t_hit, sample)
        along = np.where(u_face, ov + t * dv, ou + t * du)  # position along the face (m)
        n_u = np.where(u_face, -np.sign(du), 0.0)
        n_v = np.where(u_face, 0.0, -np.sign(dv))
        nx, ny = n_u * c - n_v * s, n_u * s + n_v * c  # face normal, world
        z = t * cosb[0, cols]
        hpix = above - vc[np.nonzero(mask)[0], 0] * z / cam.fy  # height of the pixel on the wall
        wall_top = b.eave_h[i] + np.where(u_face, b.ridge_h[i] * np.clip(1 - np.abs(along) / hw, 0, 1), 0.0)
        roof = hpix > wall_top + 0.05
        facade = b.facade_rgb[i].astype(np.float32)
        lam = np.clip(nx * self._sun[0] + ny * self._sun[1], 0.0, None)  # horizontal part of n.sun
        light = self._norm * (self.appearance.ambient + self._direct * lam)[:, None] * \
            np.where((lam > 0)[:, None], self._sun_rgb[None, :], np.float32(1.0))
        # windows: one per storey and window pitch, none on the ground floor of small houses
        fh, ws = b.floor_h[i], b.window_spacing[i]
        fz = np.mod(hpix, fh) / fh
        fs = np.mod(along + 100.0 * ws, ws) / ws
        window = (fz > 0.35) & (fz < 0.8) & (fs > 0.25) & (fs < 0.75) & (hpix > fh * 0.3) & \
            (hpix < b.eave_h[i] - 0.4) & ~roof
        col = facade * light
        sky_reflect = np.float32(0.35 + 0.4 * self.appearance.ambient)
        col[window] = _WINDOW_RGB * (1.0 + sky_reflect * np.clip(lam[window], 0, 1))[:, None]
        col[roof] = b.roof_rgb[i][roof].astype(np.float32) * 0.8
        # ground-level darkening (kerb/plinth) for a bit of depth
        col[hpix < 0.4] *= 0.75
        img[mask] = col
        dist[mask] = t
        if self._scene is not None:  # lit windows at night: which window of which storey of which building
            self._scene.windows(mask, window, i, np.floor(hpix / fh), np.floor((along + 100.0 * ws) / ws))

    def _shade_vegetation_and_cars(self, img, dist, mask, osem, orow, ocol, vc, cosb, x, y, dx, dy, above) -> None:
        cam = self.camera
        rows, cols = np.nonzero(mask)
        t = dist[mask]
        hpix = above - vc[rows, 0] * (t * cosb[0, cols]) / cam.fy
        alb = self.albedo[orow[mask], ocol[mask]].astype(np.float32)
        sem = osem[mask]
        hx = np.floor((x + dx[cols] * t) * 3.0).astype(np.int64)
        hy = np.floor((y + dy[cols] * t) * 3.0).astype(np.int64)
        hz = np.floor(hpix * 3.0).astype(np.int64)
        leaf = ((hx * 73856093) ^ (hy * 19349663) ^ (hz * 83492791)) % 997 / 997.0  # stable leafy texture
        app = self.appearance
        tree = sem == Sem.TREE
        shade = np.where(tree, 0.55 + 0.6 * leaf * np.clip(hpix / 6.0, 0.3, 1.0), 1.0)
        car = sem == Sem.CAR
        glass = car & (hpix > 0.95) & (hpix < 1.4)
        shade = np.where(car & (hpix < 0.35), 0.3, shade)  # tyres and shadow under the car
        light = self._norm * (app.ambient + self._direct * 0.6 * math.cos(math.radians(app.sun_elevation_deg)))
        col = alb * (shade * light)[:, None] * self._sun_rgb[None, :]
        col[glass] = _WINDOW_RGB * 1.2
        img[mask] = col

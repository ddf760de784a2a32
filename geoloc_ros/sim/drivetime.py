"""The drive-time world in the camera (``sim.conditions.Conditions``): glue between ``GroundRenderer``
and the effects, each in its own module (``traffic``, ``lighting``, ``weather``, ``roadchanges``).

The renderer calls, per drive: ``DriveTime(...)`` (before its own layers: the lit appearance, e.g.
a dusk sun, decides the shadows), ``prepare`` (after: road changes and wet surfaces go into its
copies of the rasters); per frame: ``enter`` / ``leave`` around the ray cast (traffic stamped into
those copies and restored), ``level`` on the ray-cast level image (sky, haze, night light, glows,
wet reflections, fog), ``camera`` on the final image before exposure (motion blur, lens drops,
night gain and its noise). Random draws come from the drive's streams (``sim.drive.stream_rng``:
traffic, lighting, weather, road) of the appearance's seed; ``realisation`` records them.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from . import lighting as L
from .drive import stream_rng
from .traffic import Traffic, restore, stamp
from .weather import LensDrops, fog, wet_albedo, wet_reflection

CAMERA_FIELDS = ("traffic", "time_of_day", "weather", "road_changes")


def affects_camera(conditions) -> bool:
    """Whether any field the camera sees differs from a default drive (the others are the sensors')."""
    return conditions is not None and (conditions.traffic > 0 or conditions.time_of_day != "day" or
                                       conditions.weather != "clear" or conditions.road_changes > 0)


class DriveTime:
    def __init__(self, conditions, appearance, world, ego=None):
        c = self.cond = conditions
        self.seed = int(appearance.seed)
        self.world, self.ego = world, ego
        self.night = c.time_of_day == "night"
        rng_l, rng_w = stream_rng(self.seed, "lighting"), stream_rng(self.seed, "weather")
        self.appearance, self._light = L.lit_appearance(appearance, c.time_of_day, c.weather, rng_l)
        self.lights = L.StreetLights(world, rng_l) if self.night else None
        self.visibility_m = float(rng_w.uniform(60.0, 200.0)) if c.weather == "fog" else None
        self.drops = LensDrops(self.seed, rng_w) if c.weather == "rain" else None
        self.traffic = Traffic(world, c.traffic, stream_rng(self.seed, "traffic"), ego) if c.traffic else None
        self._road = None
        self._placed = []
        self._windows = None
        self.lit_window_share = float(rng_l.uniform(0.2, 0.45)) if self.night else 0.0

    def windows(self, mask, window, building, storey, column) -> None:
        """From the renderer's building shading: the window pixels of this frame (lit ones glow at night)."""
        if not self.night or not window.any():
            return
        key = (building.astype(np.int64) * 7919 + storey.astype(np.int64) * 104729 + column.astype(np.int64) * 1299709
               + self.seed) % 1000
        lit = window & (key < 1000 * self.lit_window_share)
        rows, cols = np.nonzero(mask)
        self._windows = (rows[lit], cols[lit], (key[lit] % 7).astype(np.float32))

    def prepare(self, r) -> None:
        """Road changes and wet surfaces into the renderer's raster copies (never the world's)."""
        if self.cond.road_changes > 0:
            from .roadchanges import apply_road_changes

            self._road = apply_road_changes(self.world, r.sem, r.albedo, r.height, stream_rng(self.seed, "road"),
                                            float(self.cond.road_changes), self.ego)
        if self.cond.weather == "rain":
            wet_albedo(r.sem, r.albedo)

    # ---- per frame ------------------------------------------------------------------------
    def enter(self, r, x: float, y: float, yaw: float, t: float | None):
        self._placed, self._windows = [], None
        if self.traffic is None:
            return None
        sun = None if self.night else r._sun
        saved, self._placed = stamp(r, self.traffic, 0.0 if t is None else t, x, y, yaw, sun)
        return saved

    def leave(self, r, saved) -> None:
        if saved:
            restore(r, saved)

    def level(self, r, img, depth, sem, x: float, y: float, yaw: float, bearing, vcs, cz: float) -> None:
        """Light, sky, haze, reflections and fog on the level ray-cast image, in place."""
        c, cam, app = self.cond, r.camera, self.appearance
        fin = np.isfinite(depth)
        sky = ~fin
        elev = np.clip(-vcs / cam.fy, 0.0, None)
        sky_rgb = L.sky_rgb(c.time_of_day, c.weather, elev)
        if sky_rgb is not None and not self.night:
            # the renderer's haze tends to its own grey: move it to this sky's horizon colour
            old = np.array([200.0, 208.0, 215.0], np.float32) * min(1.0, 0.85 + 0.3 * app.ambient)
            frac = 1.0 - np.exp(-np.where(fin, depth, np.float32(0.0)) * np.float32(1.0 / app.haze_m))
            frac[fin & (depth > r.max_range_m)] = 1.0
            img += frac[..., None] * (sky_rgb[0] - old)[None, None, :]
        if self.night:
            import cv2

            # the light is smooth: computed on every other row and column, interpolated back
            bs, vs, ds = bearing[::2], vcs[::2], depth[::2, ::2]
            D = np.where(np.isfinite(ds), ds, np.float32(0.0))
            hx = np.float32(x) + np.cos(yaw + bs).astype(np.float32)[None, :] * D
            hy = np.float32(y) + np.sin(yaw + bs).astype(np.float32)[None, :] * D
            hz = np.float32(cam.mount_height_m) - (vs / cam.fy).astype(np.float32)[:, None] * D * \
                np.cos(bs).astype(np.float32)[None, :]
            # beams light nothing above 3 m: rows more than 0.2 fy above the horizon see that height only
            # within 6 m, where the beams ramp in
            r0 = int(np.searchsorted(vs, -0.2 * cam.fy))
            light = L.night_light(hx, hy, hz, ds, (x, y, yaw), self.lights, self._placed, r0)
            img *= cv2.resize(light, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            if self._windows is not None:  # lit windows: warm, some brighter than others
                wr, wc, tone = self._windows
                img[wr, wc] += (np.float32(0.55) + np.float32(0.08) * tone)[:, None] * L.WINDOW_RGB
                self._windows = None
        if sky_rgb is not None:
            np.copyto(img, sky_rgb[:, None, :], where=sky[..., None])
        if self.night:
            pts, cols, sizes = L.lamp_heads(self.lights, x, y)
            if self._placed:
                vp, vc, vs = L.vehicle_lamps(self.traffic, self._placed)
                pts, cols, sizes = np.vstack([pts, vp]), np.vstack([cols, vc]), np.concatenate([sizes, vs])
            # lamp heights are above their ground: the camera's too (terrain slope between them ignored)
            L.glows(img, depth, bearing, vcs, cam.fx, cam.fy, (x, y, cz - float(r.ground_z(x, y)), yaw), pts, cols,
                    sizes)
        if c.weather == "rain":
            wet_reflection(img, sem, vcs, cam.fy, 1.0)
        elif c.weather == "fog":
            air = np.array([12.0, 13.0, 16.0] if self.night else [192.0, 195.0, 199.0], np.float32)
            fog(img, depth, self.visibility_m, air)

    def camera(self, r, img: np.ndarray, depth: np.ndarray, x: float, y: float, yaw: float,
               t: float | None) -> np.ndarray:
        """Motion blur, lens drops and night gain + noise on the final float image (before exposure)."""
        cam = r.camera
        if self.ego is not None and t is not None:
            speed = float(self.ego.at(t).speed)
            img = L.motion_blur(img, depth, cam.cx, cam.cy, speed * L.EXPOSURE_S[self.cond.time_of_day])
        if self.drops is not None:
            self.drops.apply(img, t)
        if self.night:
            # gain noise, then the camera at its longest exposure and highest gain: NIGHT_GAIN in all; a
            # sensor's auto exposure would go further, so the frame is pre-scaled to end at that cap
            rng = np.random.default_rng([self.seed & 0x7FFFFFFF, int(round(x * 100)) & 0xFFFFFFFF,
                                         int(round(y * 100)) & 0xFFFFFFFF, int(round((t or 0.0) * 1000)) & 0xFFFFFFFF])
            img += rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32) * np.float32(L.NIGHT_NOISE_DN)
            sensor = r.sensor
            if sensor is None:
                return img * np.float32(L.NIGHT_GAIN)
            lum = max(float(np.mean(img[::4, ::4] @ np.array([0.299, 0.587, 0.114], np.float32))) *
                      self.appearance.brightness, 1.0)  # the sensor's own mean, near enough for a cap
            s = sensor.exposure_strength
            auto = (255.0 * sensor.exposure_target / lum) ** s
            if auto > L.NIGHT_GAIN and s < 0.999:
                img = img * np.float32((L.NIGHT_GAIN / auto) ** (1.0 / (1.0 - s)))
        return img

    def realisation(self) -> Dict:
        out: Dict = {"seed": self.seed, "conditions": {k: getattr(self.cond, k) for k in CAMERA_FIELDS},
                     "lighting": dict(self._light)}
        if self.lights is not None:
            out["lighting"]["street_lights"] = self.lights.realisation()
            out["lighting"]["lit_window_share"] = round(self.lit_window_share, 3)
        w: Dict = {"kind": self.cond.weather}
        if self.visibility_m is not None:
            w["visibility_m"] = round(self.visibility_m, 2)
        if self.drops is not None:
            w.update(wetness=1.0, lens_drops=self.drops.realisation())
        out["weather"] = w
        out["traffic"] = self.traffic.realisation() if self.traffic is not None else None
        out["road_changes"] = self._road
        return out

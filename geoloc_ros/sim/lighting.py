"""Time of day for the camera renderer (``Conditions.time_of_day``): dusk and night light.

* ``dusk``: the sun 3-8 deg above the horizon (long shadows, cast by the renderer for that sun),
  warm sunlight, less ambient light, a warm sky and 0.55 x the brightness (less exposure).
* ``night``: the scene is ray-cast unlit (albedo) and multiplied per pixel by the light that
  reaches it: a bluish ambient of ``NIGHT_AMBIENT`` (a few percent of day), the ego car's low
  beams (a cone 3-40 m ahead, asymmetric towards the kerb, falling off with distance), street
  lights every 30-50 m along every road (pools of light: ``StreetLights``, an irradiance raster
  at 1 m made once per drive), the head lights of vehicles that face the light's receiver (their
  own beams, up to ``MAX_BEAMS``), computed at half resolution and interpolated; then lit windows
  (a share drawn per drive, chosen per building, storey and window) and lamp glows (street lamp
  heads, head and tail lights of the stamped vehicles, where not occluded). The camera exposes ``NIGHT_GAIN`` x longer, adds
  gain noise before the sensor's auto exposure amplifies it, and the longer exposure blurs along
  the direction of travel (``motion_blur``: speed x exposure, radial from the image centre, by
  each pixel's depth).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, List, Tuple

import numpy as np

EXPOSURE_S = {"day": 0.002, "dusk": 0.012, "night": 0.033}
NIGHT_AMBIENT = np.array([0.022, 0.025, 0.032], np.float32)
NIGHT_GAIN = 2.0  # the camera's longest exposure x highest gain at night (the auto exposure's cap)
NIGHT_NOISE_DN = 1.5  # gain noise (1 sigma, DN, before the gain)
MAX_BEAMS = 3
LAMP_HEIGHT_M = 8.0
WINDOW_RGB = np.array([120.0, 95.0, 60.0], np.float32)  # a lit window at night (before the camera's gain)


def lit_appearance(app, time_of_day: str, weather: str, rng: np.random.Generator):
    """The appearance the renderer lights the scene with, and what was drawn for it."""
    info: Dict = {"time_of_day": time_of_day}
    if time_of_day == "dusk":
        el = float(rng.uniform(3.0, 8.0))
        az = float(rng.choice([rng.uniform(235.0, 295.0), rng.uniform(65.0, 125.0)]))
        app = replace(app, sun_elevation_deg=el, sun_azimuth_deg=az, sun_rgb=(1.0, 0.76, 0.52), ambient=0.3,
                      brightness=max(0.2, round(app.brightness * 0.55, 4)), haze_m=min(app.haze_m, 600.0))
    elif time_of_day == "night":
        # unlit: ambient 1 and no direct sun, the night light multiplies the albedo (``night_light``)
        app = replace(app, sun_elevation_deg=90.0, sun_rgb=(1.0, 1.0, 1.0), ambient=1.0, brightness=1.0)
    if weather in ("rain", "fog") and time_of_day != "night":  # overcast: mostly diffuse light
        app = replace(app, ambient=max(app.ambient, 0.82 if weather == "rain" else 0.9),
                      sun_rgb=tuple(round(0.5 * c + 0.5 * g, 4) for c, g in zip(app.sun_rgb, (0.95, 0.97, 1.0))),
                      brightness=max(0.2, round(app.brightness * (0.7 if weather == "rain" else 0.85), 4)),
                      haze_m=min(app.haze_m, 260.0) if weather == "rain" else app.haze_m)
    info.update(sun_azimuth_deg=round(app.sun_azimuth_deg, 3), sun_elevation_deg=round(app.sun_elevation_deg, 3),
                sun_rgb=[float(c) for c in app.sun_rgb], ambient=app.ambient, brightness=app.brightness,
                haze_m=round(app.haze_m, 2), exposure_s=EXPOSURE_S[time_of_day])
    return app, info


def sky_rgb(time_of_day: str, weather: str, elev: np.ndarray) -> np.ndarray | None:
    """Sky colour per row (``elev``: tan of the row's elevation) or None to keep the renderer's."""
    t = np.clip(elev / 0.6, 0.0, 1.0)[:, None]
    if time_of_day == "night":
        lo, hi = (24.0, 25.0, 36.0), (3.0, 5.0, 13.0)
    elif weather in ("rain", "fog"):
        lo, hi = (176.0, 180.0, 186.0), (138.0, 144.0, 154.0)
        if time_of_day == "dusk":
            lo, hi = (150.0, 128.0, 112.0), (80.0, 86.0, 104.0)
    elif time_of_day == "dusk":
        lo, hi = (240.0, 168.0, 112.0), (62.0, 82.0, 132.0)
    else:
        return None
    return (np.array(lo, np.float32) * (1 - t) + np.array(hi, np.float32) * t).astype(np.float32)


class StreetLights:
    """Lamps every 30-50 m along every road edge (alternating kerbs, 8 m high) and their irradiance on
    the ground (1 m raster, ``(h^2 / (h^2 + d^2))^1.5``: the cosine law of a point source)."""

    def __init__(self, world, rng: np.random.Generator):
        roads = world.roads
        pts: List[Tuple[float, float]] = []
        self.spacing = float(rng.uniform(30.0, 50.0))
        self.sodium = bool(rng.random() < 0.5)
        self.rgb = np.array((1.0, 0.72, 0.42) if self.sodium else (0.95, 0.97, 1.0), np.float32)
        for e in range(roads.num_edges):
            p = roads.edge_points[e].astype(float)
            seg = np.diff(p, axis=0)
            L = np.hypot(seg[:, 0], seg[:, 1])
            cum = np.concatenate([[0.0], np.cumsum(L)])
            if cum[-1] < 20.0:
                continue
            off = float(roads.edge_width[e]) / 2 + 0.8
            for j, s in enumerate(np.arange(rng.uniform(5.0, self.spacing), cum[-1] - 5.0, self.spacing)):
                i = min(int(np.searchsorted(cum, s, side="right")) - 1, len(seg) - 1)
                d = seg[i] / max(L[i], 1e-9)
                side = 1.0 if (j + e) % 2 else -1.0
                q = p[i] + (s - cum[i]) * d + side * off * np.array([d[1], -d[0]])
                pts.append((float(q[0]), float(q[1])))
        self.xy = np.array(pts, float).reshape(-1, 2)
        self.intensity = 0.55
        m = world.meta
        self.x_min, self.y_max, self.res = m.x_min, m.y_max, 1.0
        n = int(math.ceil(m.size_m / self.res))
        E = np.zeros((n, n), np.float32)
        R = 24
        k = np.arange(-R, R + 1, dtype=np.float32)
        d2 = k[:, None] ** 2 + k[None, :] ** 2
        h2 = LAMP_HEIGHT_M ** 2
        kern = ((h2 / (h2 + d2)) ** 1.5).astype(np.float32) * self.intensity
        for x, y in self.xy:
            r, c = int((self.y_max - y) / self.res), int((x - self.x_min) / self.res)
            r0, r1, c0, c1 = max(r - R, 0), min(r + R + 1, n), max(c - R, 0), min(c + R + 1, n)
            if r0 < r1 and c0 < c1:
                E[r0:r1, c0:c1] += kern[r0 - (r - R):r1 - (r - R), c0 - (c - R):c1 - (c - R)]
        self.E = E

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Irradiance at points x, y [H, W] float32 (bilinear; 0 outside the world)."""
        import cv2

        inv = np.float32(1.0 / self.res)
        return cv2.remap(self.E, (x - np.float32(self.x_min)) * inv - np.float32(0.5),
                         (np.float32(self.y_max) - y) * inv - np.float32(0.5), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def realisation(self) -> Dict:
        return {"count": int(len(self.xy)), "spacing_m": round(self.spacing, 2),
                "kind": "sodium" if self.sodium else "led", "height_m": LAMP_HEIGHT_M}


def beam(hx, hy, hz, lx: float, ly: float, lyaw: float, intensity: float = 0.9) -> np.ndarray:
    """Low-beam irradiance at points (hx, hy, height hz) from a car at (lx, ly) heading ``lyaw``: a cone
    about +-18 deg (wider towards the right kerb), ramping in over 1.5-5 m, falling off with distance and
    cut off 35-48 m ahead; none above 3 m. float32 throughout (it runs on every lit pixel)."""
    c, s = np.float32(math.cos(lyaw)), np.float32(math.sin(lyaw))
    rx, ry = hx - np.float32(lx), hy - np.float32(ly)
    a = rx * c + ry * s
    lat = ry * c - rx * s
    q = lat / np.maximum(a, np.float32(0.1))  # tan of the angle off the axis
    q = q / np.where(q < 0, np.float32(0.4), np.float32(0.32))
    E = np.exp(np.float32(-0.5) * q * q) * np.float32(intensity) / (np.float32(1.0) + (a * np.float32(0.05)) ** 2)
    E *= np.clip((a - np.float32(1.5)) / np.float32(3.5), 0.0, 1.0)
    E *= np.clip((np.float32(48.0) - a) / np.float32(13.0), 0.0, 1.0)
    return E * np.clip(np.float32(1.0) - (hz - np.float32(1.3)) * np.float32(0.6), 0.0, 1.0)


def night_light(hx, hy, hz, depth, pose, lights: StreetLights, vehicles, r0: int = 0) -> np.ndarray:
    """The night light [H, W, 3] that multiplies the unlit level image (sky pixels too: the caller
    paints the sky afterwards). ``pose`` the ego (x, y, yaw); ``vehicles`` [(i, x, y, yaw)] of the stamped
    vehicles; hx, hy, hz [H, W] float32 (world x, y and height above the ground of each pixel); beams
    only from row ``r0`` down (rows above see nothing below 3 m further than a few metres)."""
    x, y, yaw = pose
    street = lights.at(hx, hy) * np.clip(np.float32(1.4) - hz * np.float32(0.13), np.float32(0.25), np.float32(1.0))
    head = np.zeros(hz.shape, np.float32)
    hx, hy, hz, depth = hx[r0:], hy[r0:], hz[r0:], depth[r0:]
    head[r0:] = beam(hx, hy, hz, x + 1.5 * math.cos(yaw), y + 1.5 * math.sin(yaw), yaw)
    # vehicles facing the camera light the road towards it: the nearest few, on the pixels before them
    facing = []
    for (_, vx, vy, vyaw) in vehicles:
        d = math.hypot(vx - x, vy - y)
        if d < 70.0 and math.cos(vyaw) * (x - vx) + math.sin(vyaw) * (y - vy) > 0:
            facing.append((d, vx, vy, vyaw))
    for d, vx, vy, vyaw in sorted(facing)[:MAX_BEAMS]:
        m = depth < d + 2.0
        head[r0:][m] += beam(hx[m], hy[m], hz[m], vx, vy, vyaw, 0.7)
    light = head[..., None] * np.array([1.0, 0.98, 0.92], np.float32)
    light += street[..., None] * lights.rgb
    light += NIGHT_AMBIENT
    return light


def glows(img, depth, bearing, vcs, fx: float, fy: float, cam: Tuple[float, float, float, float],
          points: np.ndarray, rgb: np.ndarray, size_m: np.ndarray) -> int:
    """Add light-source glows (points [M, 3] world x, y, z) to the level image where they are not
    occluded: a core of ``size_m`` and a wide halo. Returns how many were drawn."""
    x, y, cz, yaw = cam
    H, W = img.shape[:2]
    n = 0
    b_max, b_min = float(bearing[0]), float(bearing[-1])
    for (px, py, pz), col, sz in zip(points, rgb, size_m):
        dh = math.hypot(px - x, py - y)
        b = (math.atan2(py - y, px - x) - yaw + math.pi) % (2 * math.pi) - math.pi
        if dh < 1.0 or not (b_min - 0.05 <= b <= b_max + 0.05):
            continue
        z = dh * math.cos(b)
        if z < 1.0:
            continue
        u = float(np.interp(-b, -bearing, np.arange(W)))
        v = -fy * (pz - cz) / z - vcs[0]
        ui, vi = int(round(u)), int(round(v))
        if 0 <= ui < W and 0 <= vi < H and depth[vi, ui] < dh - 0.8:
            continue  # behind something
        core = max(0.8, fx * sz / z)
        R = int(math.ceil(core * 8)) + 2
        r0, r1, c0, c1 = max(vi - R, 0), min(vi + R + 1, H), max(ui - R, 0), min(ui + R + 1, W)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0:r1, c0:c1]
        d2 = ((yy - v) ** 2 + (xx - u) ** 2) / core ** 2
        wgt = np.exp(-d2) + 0.06 * np.exp(-np.sqrt(d2) / 2.0)
        img[r0:r1, c0:c1] += wgt[..., None].astype(np.float32) * col[None, None, :]
        n += 1
    return n


def vehicle_lamps(traffic, placed) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head (white) and tail (red) lights of the stamped vehicles: points, colours, sizes."""
    pts, cols, sizes = [], [], []
    for i, vx, vy, vyaw in placed:
        hl, hw = traffic.half_len[i], traffic.half_wid[i]
        c, s = math.cos(vyaw), math.sin(vyaw)
        for along, lat, z, col, sz in ((hl + 0.05, hw - 0.35, 0.75, (900.0, 880.0, 820.0), 0.14),
                                       (hl + 0.05, -(hw - 0.35), 0.75, (900.0, 880.0, 820.0), 0.14),
                                       (-hl - 0.05, hw - 0.3, 0.95, (420.0, 40.0, 25.0), 0.1),
                                       (-hl - 0.05, -(hw - 0.3), 0.95, (420.0, 40.0, 25.0), 0.1)):
            pts.append((vx + along * c - lat * s, vy + along * s + lat * c, z))
            cols.append(col)
            sizes.append(sz)
    return np.array(pts, float).reshape(-1, 3), np.array(cols, np.float32).reshape(-1, 3), np.array(sizes)


def lamp_heads(lights: StreetLights, x: float, y: float, max_m: float = 120.0):
    d = np.hypot(lights.xy[:, 0] - x, lights.xy[:, 1] - y)
    sel = lights.xy[d < max_m]
    pts = np.column_stack([sel, np.full(len(sel), LAMP_HEIGHT_M)])
    return pts, np.tile(lights.rgb * 500.0, (len(sel), 1)), np.full(len(sel), 0.15)


_GRIDS: Dict = {}


def motion_blur(img: np.ndarray, depth: np.ndarray, cx: float, cy: float, length_m: float) -> np.ndarray:
    """Blur along the direction of travel: a point at depth d moves radially by (p - c) L / d while the
    shutter is open; the average of the frame at the start, middle and end of that path (bilinear)."""
    import cv2

    if length_m < 0.05:  # a day's short exposure: under a pixel
        return img
    H, W = depth.shape
    key = (H, W, cx, cy)
    if key not in _GRIDS:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        _GRIDS.clear()
        _GRIDS[key] = (yy, xx, yy - np.float32(cy), xx - np.float32(cx))
    yy, xx, dy, dx = _GRIDS[key]
    k = np.minimum(np.float32(length_m) / np.maximum(depth, np.float32(1.0)), np.float32(0.25))  # sky: 0
    out = img.copy()
    for f in (0.5, 1.0):
        kf = k * np.float32(f)
        out += cv2.remap(img, xx - dx * kf, yy - dy * kf, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out *= np.float32(1.0 / 3.0)
    return out

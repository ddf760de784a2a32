"""The node's debug picture (ROS-free: numpy + Pillow, rasterio only for the optional orthophoto).

A square, north-up (map-frame grid north) view centred on the current estimate:

* background: the orthophoto crop (GeoTIFF, windowed read) or a dark grey canvas;
* the similarity map of the last keyframe (tiles scored near the prior) as a heatmap overlay;
* the top-k candidates (rings, brighter = higher score);
* raw GNSS: red crosses (recent fixes) and the latest fix's 2-sigma circle;
* the recent estimated path (green line) and the estimate (blue dot, heading tick, 2-sigma
  covariance ellipse);
* a status line (status, confidence, time, reasons).

``DebugRenderer(frame, ortho_path=None).render(...) -> uint8 [S, S, 3]``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

STATUS_COLOURS = {"tracking": (60, 220, 60), "degraded": (240, 200, 40), "lost": (240, 60, 60),
                  "initialising": (160, 160, 160)}


def ellipse_points(cov2: np.ndarray, n_sigma: float = 2.0, n: int = 48) -> np.ndarray:
    """Points [n, 2] (metres, relative to the centre) of the n-sigma ellipse of a 2x2 covariance."""
    c = np.asarray(cov2, float)[:2, :2]
    c = 0.5 * (c + c.T)
    w, v = np.linalg.eigh(c)
    w = np.sqrt(np.clip(w, 0.0, None)) * n_sigma
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    circle = np.stack([np.cos(a) * w[0], np.sin(a) * w[1]], axis=1)
    return circle @ v.T


def heat_colour(v: np.ndarray) -> np.ndarray:
    """[N] values in 0..1 -> [N, 3] uint8 (black-red-yellow-white ramp)."""
    v = np.clip(np.asarray(v, float), 0, 1)
    r = np.clip(v * 3, 0, 1)
    g = np.clip(v * 3 - 1, 0, 1)
    b = np.clip(v * 3 - 2, 0, 1)
    return (np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


class DebugRenderer:
    def __init__(self, frame, ortho_path: Optional[Path] = None, size_px: int = 400, crop_m: float = 200.0,
                 cell_m: float = 5.0):
        self.frame = frame  # LocalFrame of the map frame
        self.cell_m = float(cell_m)  # tile grid spacing: the size of one heatmap square
        self.size = int(size_px)
        self.crop_m = float(crop_m)
        self.ortho_path = Path(ortho_path) if ortho_path else None
        self._ds = None
        self._to_raster = None
        self.background_error: Optional[str] = None

    # -------------------------------------------------------------- background
    def _open(self):
        if self._ds is not None or self.ortho_path is None or self.background_error:
            return self._ds
        try:
            import rasterio

            self._ds = rasterio.open(self.ortho_path)
            epsg = self._ds.crs.to_epsg() if self._ds.crs else None
            if epsg == self.frame.epsg:
                self._to_raster = lambda x, y: self.frame.to_utm(x, y)
            else:
                from pyproj import Transformer

                tr = Transformer.from_crs(4326, self._ds.crs, always_xy=True)

                def to_raster(x, y):
                    lat, lon = self.frame.to_latlon(x, y)
                    return tr.transform(lon, lat)

                self._to_raster = to_raster
        except Exception as exc:  # a bad orthophoto must not stop the node: plain background instead
            self.background_error = f"cannot read orthophoto {self.ortho_path}: {exc}"
            log.warning(self.background_error)
            self._ds = None
        return self._ds

    def background(self, cx: float, cy: float) -> np.ndarray:
        s = self.size
        canvas = np.full((s, s, 3), 48, np.uint8)
        ds = self._open()
        if ds is None:
            return canvas
        try:
            from rasterio.enums import Resampling
            from rasterio.windows import from_bounds

            h = self.crop_m / 2
            xs, ys = self._to_raster(np.array([cx - h, cx + h, cx - h, cx + h]), np.array([cy - h, cy - h, cy + h, cy + h]))
            xs, ys = np.asarray(xs), np.asarray(ys)
            win = from_bounds(xs.min(), ys.min(), xs.max(), ys.max(), transform=ds.transform)
            bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
            arr = ds.read(bands, window=win, out_shape=(3, s, s), boundless=True, fill_value=48,
                          resampling=Resampling.bilinear)
            return np.ascontiguousarray(np.moveaxis(arr, 0, 2)).astype(np.uint8)
        except Exception as exc:
            self.background_error = f"orthophoto read failed: {exc}"
            log.warning(self.background_error)
            self._ds = None
            return canvas

    # -------------------------------------------------------------- drawing
    def render(self, *, centre: Tuple[float, float], estimate: Optional[dict] = None,
               sim_map: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
               candidates: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
               gnss: Sequence[Tuple[float, float]] = (), gnss_cov: Optional[np.ndarray] = None,
               path: Sequence[Tuple[float, float]] = (), text: str = "") -> np.ndarray:
        """Draw the picture. Positions are map-frame metres. ``estimate``: dict with x, y, yaw, cov
        (3x3 or 2x2), status. ``sim_map``/``candidates``: (x, y, score) arrays."""
        from PIL import Image, ImageDraw

        cx, cy = float(centre[0]), float(centre[1])
        s = self.size
        mpp = self.crop_m / s

        def px(x, y):
            return (np.asarray(x, float) - cx) / mpp + s / 2, s / 2 - (np.asarray(y, float) - cy) / mpp

        img = Image.fromarray(self.background(cx, cy), "RGB")
        if sim_map is not None and len(sim_map[0]):
            x, y, sc = (np.asarray(a, float) for a in sim_map)
            ok = np.isfinite(sc)
            if ok.any():
                x, y, sc = x[ok], y[ok], sc[ok]
                lo, hi = float(sc.min()), float(sc.max())
                v = (sc - lo) / (hi - lo) if hi > lo else np.full_like(sc, 0.5)
                col = heat_colour(v)
                over = Image.new("RGBA", (s, s), (0, 0, 0, 0))
                od = ImageDraw.Draw(over)
                # one square per scored position (several headings at one place: the best is drawn last)
                order = np.argsort(v)
                half = max(2.0, 0.45 * self.cell_m / mpp)
                u, w = px(x, y)
                for i in order:
                    c = tuple(int(k) for k in col[i])
                    od.rectangle([u[i] - half, w[i] - half, u[i] + half, w[i] + half], fill=c + (int(60 + 120 * v[i]),))
                img = Image.alpha_composite(img.convert("RGBA"), over).convert("RGB")
        d = ImageDraw.Draw(img)
        if candidates is not None and len(candidates[0]):
            x, y, sc = (np.asarray(a, float) for a in candidates)
            u, w = px(x, y)
            for k in range(len(u) - 1, -1, -1):
                r = 7 if k == 0 else 5
                d.ellipse([u[k] - r, w[k] - r, u[k] + r, w[k] + r], outline=(255, 0, 255) if k == 0 else (200, 120, 255),
                          width=2)
        if len(gnss):
            g = np.asarray(gnss, float)
            u, w = px(g[:, 0], g[:, 1])
            for a, b in zip(u, w):
                d.line([a - 3, b - 3, a + 3, b + 3], fill=(255, 60, 60), width=2)
                d.line([a - 3, b + 3, a + 3, b - 3], fill=(255, 60, 60), width=2)
            if gnss_cov is not None:
                e = ellipse_points(gnss_cov) + g[-1]
                eu, ew = px(e[:, 0], e[:, 1])
                d.polygon(list(zip(eu.tolist(), ew.tolist())), outline=(255, 60, 60))
        if len(path) > 1:
            p = np.asarray(path, float)
            u, w = px(p[:, 0], p[:, 1])
            d.line(list(zip(u.tolist(), w.tolist())), fill=(60, 230, 90), width=2)
        if estimate is not None:
            ex, ey = float(estimate["x"]), float(estimate["y"])
            u, w = px(ex, ey)
            u, w = float(u), float(w)
            col = STATUS_COLOURS.get(str(estimate.get("status")), (80, 160, 255))
            cov = estimate.get("cov")
            if cov is not None and np.all(np.isfinite(np.asarray(cov, float)[:2, :2])):
                e = ellipse_points(np.asarray(cov, float)[:2, :2]) + (ex, ey)
                eu, ew = px(e[:, 0], e[:, 1])
                d.polygon(list(zip(eu.tolist(), ew.tolist())), outline=(80, 160, 255))
            d.ellipse([u - 5, w - 5, u + 5, w + 5], fill=(80, 160, 255), outline=col, width=2)
            yaw = estimate.get("yaw")
            if yaw is not None and math.isfinite(float(yaw)):
                d.line([u, w, u + 14 * math.cos(yaw), w - 14 * math.sin(yaw)], fill=(80, 160, 255), width=3)
        # scale bar: 50 m (or a tenth of the crop)
        bar_m = 50.0 if self.crop_m >= 100 else self.crop_m / 4
        d.rectangle([8, s - 14, 8 + bar_m / mpp, s - 10], fill=(255, 255, 255))
        d.text((10, s - 28), f"{bar_m:g} m", fill=(255, 255, 255))
        if text:
            d.rectangle([0, 0, s, 14], fill=(0, 0, 0))
            d.text((4, 2), text[: s // 6], fill=(255, 255, 255))
        return np.asarray(img, dtype=np.uint8)

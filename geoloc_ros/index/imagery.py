"""Aerial imagery sources: a georeferenced GeoTIFF in any CRS, or an XYZ (slippy-map) tile folder.

Both answer one question: "the heading-up tile of ``tile_m`` metres centred on this point, for
these true headings, at ``tile_px`` pixels". The tile is laid out in the index's local frame
(``core.geo.LocalFrame``, UTM grid axes): a true heading becomes a grid yaw by subtracting the grid
convergence at the tile centre, ``core.tiles.tile_grid`` gives every output pixel's local (x, y),
and those points are reprojected into the imagery CRS (pyproj) and sampled bilinearly from a
window read around the tile (never the whole raster). The imagery's own rotation relative to
UTM north (another CRS, Web Mercator) is therefore handled point by point.

When the imagery is much finer than the tile's pixel size, each output pixel averages an
``s x s`` block of bilinear samples (s <= 4) to avoid aliasing.
"""
from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.geo import LocalFrame, heading_deg_to_yaw
from ..core.tiles import sample_bilinear, tile_grid

log = logging.getLogger(__name__)

EARTH_R = 6378137.0  # Web Mercator sphere radius (m)
WEB_MERCATOR_HALF = math.pi * EARTH_R


@dataclass
class TileSample:
    """The tiles cut at one position for several headings."""

    tiles: np.ndarray  # [K, tile_px, tile_px, 3] uint8 (zeros where not valid)
    valid: np.ndarray  # [K] bool
    reason: List[str]  # per heading: "" (valid) | "outside" | "nodata"
    window: Tuple[int, int, int, int]  # (row_off, col_off, height, width) read from the source (pixels)


def _supersample(tile_m: float, tile_px: int, src_gsd_m: float) -> int:
    out_gsd = tile_m / tile_px
    return int(min(4, max(1, round(out_gsd / max(src_gsd_m, 1e-9)))))


class Imagery:
    """Base class: subclasses implement ``_to_pixels`` and ``_read``."""

    kind = "?"

    def __init__(self, path: Path):
        self.path = Path(path).absolute()  # absolute: workers (Ray) may run elsewhere
        self._to_src = {}

    # -- subclass interface ------------------------------------------------------------
    crs_string: str = ""  # e.g. "EPSG:32618" or WKT
    gsd_m: float = 1.0  # approximate ground size of one source pixel (m)

    def bounds_latlon(self) -> Tuple[float, float, float, float]:  # (lat_min, lon_min, lat_max, lon_max)
        raise NotImplementedError

    def _src_xy_to_pixels(self, X: np.ndarray, Y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _read(self, r0: int, c0: int, h: int, w: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Pixels [h, w, 3] uint8 of the window and a validity mask [h, w] bool (None = all valid)."""
        raise NotImplementedError

    @property
    def shape(self) -> Tuple[int, int]:
        raise NotImplementedError

    def spec(self) -> Dict:
        """What a worker process needs to reopen this imagery."""
        return {"path": str(self.path)}

    def describe(self) -> Dict:
        lat0, lon0, lat1, lon1 = self.bounds_latlon()
        return {"kind": self.kind, "path": str(self.path), "crs": self.crs_string, "gsd_m": round(self.gsd_m, 4),
                "shape": list(self.shape), "bounds_latlon": [lat0, lon0, lat1, lon1]}

    def close(self) -> None:
        pass

    # -- shared ------------------------------------------------------------------------
    def _transformer(self, epsg: int):
        if epsg not in self._to_src:
            from pyproj import CRS, Transformer
            from pyproj.exceptions import CRSError, ProjError

            try:
                src = CRS.from_user_input(self._crs_input())
                same = CRS.from_epsg(epsg) == src
                self._to_src[epsg] = None if same else Transformer.from_crs(CRS.from_epsg(epsg), src, always_xy=True)
            except (CRSError, ProjError) as exc:
                raise InvalidArgument(f"{self.path}: cannot transform between EPSG:{epsg} and the imagery CRS "
                                      f"{self.crs_string!r} ({exc}); reproject the imagery (e.g. `gdalwarp -t_srs "
                                      f"EPSG:{epsg}`)") from exc
        return self._to_src[epsg]

    def _crs_input(self):
        return self.crs_string

    def local_to_pixels(self, frame: LocalFrame, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Local (x, y) in ``frame`` -> continuous source (row, col)."""
        e, n = frame.to_utm(x, y)
        tr = self._transformer(frame.epsg)
        if tr is not None:
            X, Y = tr.transform(e, n)
            X, Y = np.asarray(X, float), np.asarray(Y, float)
            if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
                raise InvalidArgument(f"{self.path}: points of the area cannot be transformed into the imagery CRS "
                                      f"{self.crs_string!r}; restrict the area to where that CRS is valid")
        else:
            X, Y = e, n
        return self._src_xy_to_pixels(X, Y)

    def sample(self, frame: LocalFrame, x: float, y: float, headings_deg: Sequence[float], tile_m: float,
               tile_px: int, max_nodata: float = 0.01) -> TileSample:
        """Heading-up tiles centred on local (x, y) for each true heading (deg CW from north).

        A tile any part of which lies outside the raster is "outside"; one with more than
        ``max_nodata`` of its pixels flagged nodata is "nodata". One window read serves all headings.
        """
        headings = np.atleast_1d(np.asarray(headings_deg, float))
        K = len(headings)
        s = _supersample(tile_m, tile_px, self.gsd_m)
        n = tile_px * s
        conv = frame.grid_convergence_deg(x, y)
        gx, gy = [], []
        for h in headings:
            a, b = tile_grid(x, y, float(heading_deg_to_yaw(h - conv)), tile_m, n)
            gx.append(a)
            gy.append(b)
        rr, cc = self.local_to_pixels(frame, np.stack(gx), np.stack(gy))  # [K, n, n]
        H, W = self.shape
        inside = ((rr >= 0) & (rr <= H) & (cc >= 0) & (cc <= W)).reshape(K, -1).all(axis=1)
        tiles = np.zeros((K, tile_px, tile_px, 3), np.uint8)
        reason = ["" if ok else "outside" for ok in inside]
        r0 = max(0, int(math.floor(rr.min())) - 1)
        c0 = max(0, int(math.floor(cc.min())) - 1)
        r1 = min(H, int(math.ceil(rr.max())) + 1)
        c1 = min(W, int(math.ceil(cc.max())) + 1)
        window = (r0, c0, max(0, r1 - r0), max(0, c1 - c0))
        if not inside.any() or r1 <= r0 or c1 <= c0:
            return TileSample(tiles, inside & False, ["outside"] * K, window)
        pix, mask = self._read(r0, c0, r1 - r0, c1 - c0)
        for k in range(K):
            if not inside[k]:
                continue
            rk, ck = rr[k] - r0, cc[k] - c0
            if mask is not None:
                bad = sample_bilinear(mask.astype(np.float32), rk, ck, fill=0.0) < 0.999
                if bad.mean() > max_nodata:
                    reason[k] = "nodata"
                    continue
            v = sample_bilinear(pix, rk, ck)  # [n, n, 3] float32
            if s > 1:
                v = v.reshape(tile_px, s, tile_px, s, 3).mean(axis=(1, 3))
            tiles[k] = np.clip(v + 0.5, 0, 255).astype(np.uint8)
        valid = np.array([r == "" for r in reason])
        return TileSample(tiles, valid, reason, window)


    def tile_at(self, lat: float, lon: float, heading_deg: float, tile_m: float, tile_px: int,
                frame: Optional[LocalFrame] = None, max_nodata: float = 0.01) -> Optional[np.ndarray]:
        """The heading-up tile [tile_px, tile_px, 3] uint8 centred on (lat, lon) facing ``heading_deg``
        (true, deg CW from north), or None when it is not fully covered by valid imagery."""
        frame = frame or LocalFrame.at(float(lat), float(lon))
        x, y = frame.from_latlon(lat, lon)
        smp = self.sample(frame, float(x), float(y), [float(heading_deg)], tile_m, tile_px, max_nodata=max_nodata)
        return smp.tiles[0] if smp.valid[0] else None


class GeoTiffImagery(Imagery):
    """A georeferenced raster (GeoTIFF or anything GDAL reads), any CRS, read through windows."""

    kind = "geotiff"

    def __init__(self, path: Path):
        super().__init__(path)
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            self._ds = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise InvalidArgument(f"cannot open imagery {self.path}: {exc}") from exc
        ds = self._ds
        if ds.crs is None or ds.transform.is_identity:
            ds.close()
            raise InvalidArgument(f"{self.path} has no georeference (CRS {ds.crs}, geotransform "
                                  f"{'identity' if ds.transform.is_identity else ds.transform}); georeference it "
                                  f"first (e.g. `gdal_translate -a_srs EPSG:XXXX -a_ullr ...` or gdalwarp with GCPs)")
        if ds.count < 1:
            raise InvalidArgument(f"{self.path} has no bands")
        if ds.dtypes[0] != "uint8":
            raise InvalidArgument(f"{self.path}: bands are {ds.dtypes[0]}, expected 8-bit RGB; convert with "
                                  f"`gdal_translate -ot Byte -scale ...`")
        self._bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
        from rasterio.enums import MaskFlags

        self._masked = any(MaskFlags.all_valid not in f for f in ds.mask_flag_enums[:3])
        self.crs_string = ds.crs.to_string()
        self._inv = ~ds.transform
        # approximate GSD in metres
        a, b, _, d, e, _ = tuple(ds.transform)[:6]
        px = math.hypot(a, d)
        py = math.hypot(b, e)
        self.gsd_m = float(math.sqrt(px * py)) * self._unit_metres()

    def _unit_metres(self) -> float:
        crs = self._ds.crs
        if crs.is_geographic:
            lat0, _, lat1, _ = self.bounds_latlon()
            return 111320.0 * math.cos(math.radians((lat0 + lat1) / 2.0))
        try:
            return float(crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 - unknown unit: assume metres
            return 1.0

    def _crs_input(self):
        return self._ds.crs.to_wkt()

    @property
    def shape(self) -> Tuple[int, int]:
        return self._ds.height, self._ds.width

    def bounds_latlon(self) -> Tuple[float, float, float, float]:
        from rasterio.warp import transform_bounds

        b = self._ds.bounds
        try:
            lon0, lat0, lon1, lat1 = transform_bounds(self._ds.crs, "EPSG:4326", b.left, b.bottom, b.right, b.top,
                                                      densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - rasterio raises several types
            raise InvalidArgument(f"{self.path}: cannot transform the raster bounds to WGS84 ({exc})") from exc
        if not all(map(math.isfinite, (lon0, lat0, lon1, lat1))):
            raise InvalidArgument(f"{self.path}: the raster bounds do not transform to WGS84 (CRS {self.crs_string})")
        return float(lat0), float(lon0), float(lat1), float(lon1)

    def _src_xy_to_pixels(self, X, Y):
        a, b, c0, d, e, f0 = tuple(self._inv)[:6]
        X, Y = np.asarray(X, float), np.asarray(Y, float)
        return d * X + e * Y + f0, a * X + b * Y + c0

    def _read(self, r0, c0, h, w):
        from rasterio.windows import Window

        win = Window(c0, r0, w, h)
        pix = self._ds.read(self._bands, window=win).transpose(1, 2, 0)
        mask = None
        if self._masked:
            mask = self._ds.dataset_mask(window=win) > 0
        return pix, mask

    def close(self) -> None:
        self._ds.close()


_XYZ_NAME = re.compile(r"^(\d+)$")


class XYZImagery(Imagery):
    """A slippy-map tile folder ``z/x/y.png`` (or .jpg) in Web Mercator (EPSG:3857), XYZ row order
    (y = 0 at the north). One zoom level is used (the highest present unless ``zoom`` is given);
    missing tiles are nodata."""

    kind = "xyz"
    crs_string = "EPSG:3857"

    def __init__(self, path: Path, zoom: Optional[int] = None, cache_tiles: int = 128):
        super().__init__(path)
        zooms = sorted(int(p.name) for p in self.path.iterdir() if p.is_dir() and _XYZ_NAME.match(p.name))
        if not zooms:
            raise InvalidArgument(f"{self.path} is neither a raster file nor an XYZ tile folder (no z/x/y.png "
                                  f"levels found)")
        self.zoom = int(zoom) if zoom is not None else zooms[-1]
        if self.zoom not in zooms:
            raise InvalidArgument(f"{self.path}: zoom {zoom} not present (levels: {zooms})")
        zdir = self.path / str(self.zoom)
        self._files: Dict[Tuple[int, int], Path] = {}
        for xd in zdir.iterdir():
            if not (xd.is_dir() and _XYZ_NAME.match(xd.name)):
                continue
            for f in xd.iterdir():
                if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") and _XYZ_NAME.match(f.stem):
                    self._files[(int(xd.name), int(f.stem))] = f
        if not self._files:
            raise InvalidArgument(f"{zdir} holds no tiles named x/y.png")
        from PIL import Image

        with Image.open(next(iter(self._files.values()))) as im:
            self.tile_size = int(im.size[0])
        xs = [k[0] for k in self._files]
        ys = [k[1] for k in self._files]
        self._tx = (min(xs), max(xs) + 1)
        self._ty = (min(ys), max(ys) + 1)
        self._world_px = self.tile_size * 2 ** self.zoom
        self._cache: "OrderedDict[Tuple[int, int], Optional[np.ndarray]]" = OrderedDict()
        self._cache_n = int(cache_tiles)
        lat0, _, lat1, _ = self.bounds_latlon()
        self.gsd_m = 2 * WEB_MERCATOR_HALF / self._world_px * math.cos(math.radians((lat0 + lat1) / 2.0))

    def spec(self) -> Dict:
        return {"path": str(self.path), "zoom": self.zoom}

    @property
    def shape(self) -> Tuple[int, int]:  # the covered block of tiles, in pixels
        return ((self._ty[1] - self._ty[0]) * self.tile_size, (self._tx[1] - self._tx[0]) * self.tile_size)

    def _tile_lonlat(self, tx: float, ty: float) -> Tuple[float, float]:
        n = 2 ** self.zoom
        lon = tx / n * 360.0 - 180.0
        lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * ty / n))))
        return lon, lat

    def bounds_latlon(self):
        lon0, lat1 = self._tile_lonlat(self._tx[0], self._ty[0])
        lon1, lat0 = self._tile_lonlat(self._tx[1], self._ty[1])
        return lat0, lon0, lat1, lon1

    def _src_xy_to_pixels(self, X, Y):
        scale = self._world_px / (2 * WEB_MERCATOR_HALF)
        col = (np.asarray(X, float) + WEB_MERCATOR_HALF) * scale - self._tx[0] * self.tile_size
        row = (WEB_MERCATOR_HALF - np.asarray(Y, float)) * scale - self._ty[0] * self.tile_size
        return row, col

    def _tile(self, tx: int, ty: int) -> Optional[np.ndarray]:
        key = (tx, ty)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        f = self._files.get(key)
        arr = None
        if f is not None:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(f) as im:
                    im = im.convert("RGBA")
                    a = np.asarray(im)
            except (OSError, UnidentifiedImageError) as exc:
                raise IncompatibleArtifact(f"XYZ tile {f} cannot be read ({exc}); re-download or delete it") from exc
            if a.shape[:2] != (self.tile_size, self.tile_size):
                raise InvalidArgument(f"XYZ tile {f} is {a.shape[1]}x{a.shape[0]}, expected {self.tile_size}^2")
            arr = a
        self._cache[key] = arr
        if len(self._cache) > self._cache_n:
            self._cache.popitem(last=False)
        return arr

    def _read(self, r0, c0, h, w):
        ts = self.tile_size
        pix = np.zeros((h, w, 3), np.uint8)
        mask = np.zeros((h, w), bool)
        gr0, gc0 = r0 + self._ty[0] * ts, c0 + self._tx[0] * ts  # global pixel of the window origin
        for ty in range(gr0 // ts, (gr0 + h - 1) // ts + 1):
            for tx in range(gc0 // ts, (gc0 + w - 1) // ts + 1):
                t = self._tile(tx, ty)
                if t is None:
                    continue
                # overlap of this tile with the window, in window coordinates
                ra, rb = max(gr0, ty * ts), min(gr0 + h, (ty + 1) * ts)
                ca, cb = max(gc0, tx * ts), min(gc0 + w, (tx + 1) * ts)
                sub = t[ra - ty * ts:rb - ty * ts, ca - tx * ts:cb - tx * ts]
                pix[ra - gr0:rb - gr0, ca - gc0:cb - gc0] = sub[..., :3]
                mask[ra - gr0:rb - gr0, ca - gc0:cb - gc0] = sub[..., 3] > 0
        return pix, mask


def open_imagery(path: Union[str, Path], *, zoom: Optional[int] = None) -> Imagery:
    """A GeoTIFF (any file GDAL reads) or an XYZ tile folder, chosen by what ``path`` is."""
    p = Path(path)
    if not p.exists():
        raise InvalidArgument(f"imagery {p} does not exist; give a GeoTIFF orthophoto or an XYZ tile folder z/x/y.png")
    if p.is_dir():
        return XYZImagery(p, zoom=zoom)
    return GeoTiffImagery(p)


def open_spec(spec: Dict) -> Imagery:
    return open_imagery(spec["path"], zoom=spec.get("zoom"))


def write_xyz_tiles(out: Path, rgb: np.ndarray, frame: LocalFrame, x_min: float, y_max: float, gsd_m: float,
                    zoom: int, tile_size: int = 256) -> List[Path]:
    """Render a local-frame raster (north-up UTM grid, pixel (0, 0) at (x_min, y_max)) into XYZ tiles
    at ``zoom`` covering it (used by tests and docs examples). Pixels outside the raster are
    transparent (nodata)."""
    from PIL import Image

    from ..core.geo import _transformer

    H, W = rgb.shape[:2]
    e0, n0 = frame.to_utm(x_min, y_max)
    e1, n1 = frame.to_utm(x_min + W * gsd_m, y_max - H * gsd_m)
    to_merc = _transformer(frame.epsg, 3857)
    from_merc = _transformer(3857, frame.epsg)
    X, Y = to_merc.transform(np.array([e0, e1, e0, e1]), np.array([n0, n0, n1, n1]))
    world_px = tile_size * 2 ** zoom
    scale = world_px / (2 * WEB_MERCATOR_HALF)
    gc = (np.asarray(X) + WEB_MERCATOR_HALF) * scale
    gr = (WEB_MERCATOR_HALF - np.asarray(Y)) * scale
    written = []
    for ty in range(int(gr.min()) // tile_size, int(gr.max()) // tile_size + 1):
        for tx in range(int(gc.min()) // tile_size, int(gc.max()) // tile_size + 1):
            k = np.arange(tile_size) + 0.5
            cols, rows = np.meshgrid(tx * tile_size + k, ty * tile_size + k)
            mx = cols / scale - WEB_MERCATOR_HALF
            my = WEB_MERCATOR_HALF - rows / scale
            e, n = from_merc.transform(mx, my)
            x, y = np.asarray(e) - frame.origin_e, np.asarray(n) - frame.origin_n
            r, c = (y_max - y) / gsd_m, (x - x_min) / gsd_m
            ok = (r >= 0) & (r < H) & (c >= 0) & (c < W)
            if not ok.any():
                continue
            v = np.clip(sample_bilinear(rgb, r, c) + 0.5, 0, 255).astype(np.uint8)
            rgba = np.concatenate([v, np.where(ok, 255, 0).astype(np.uint8)[..., None]], axis=-1)
            f = Path(out) / str(zoom) / str(tx) / f"{ty}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba, "RGBA").save(f)
            written.append(f)
    return written

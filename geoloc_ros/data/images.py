"""The image work of a conversion, run in worker processes: pinhole views of equirectangular panoramas,
frames fitted to the target size, aerial tiles rotated heading-up (or kept north-up), atomic JPEG writes."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ..core.camera import PinholeCamera
from ..core.tiles import sample_bilinear
from .common import (
    _Job,
)

JPEG = {"quality": 92, "subsampling": 0}


# ---------------------------------------------------------------------------------------------- geometry


def equirect_to_pinhole(pano: np.ndarray, heading_deg: float, camera: PinholeCamera,
                        pano_vfov_deg: Optional[float] = None) -> np.ndarray:
    """Pinhole view (zero pitch and roll, horizon at the centre row) of a north-aligned panorama.

    ``pano`` [H, W, C] is equirectangular: column W/2 (the centre line) looks north, azimuth
    grows clockwise to the right, the centre row is the horizon and the rows span
    ``pano_vfov_deg`` (default 360 * H / W: square angular pixels). The view's optical axis
    points to compass heading ``heading_deg``. Bilinear, wrapping around horizontally; rows
    beyond the panorama repeat its edge. Returns uint8 [camera.height, camera.width, C].
    """
    H, W = pano.shape[:2]
    vfov = 360.0 * H / W if pano_vfov_deg is None else float(pano_vfov_deg)
    u = np.arange(camera.width) - camera.cx  # pixel centres at integer coordinates (ROS / OpenCV)
    v = np.arange(camera.height) - camera.cy
    uu, vv = np.meshgrid(u, v)
    az = np.degrees(np.arctan2(uu, camera.fx))  # right of the axis is positive (clockwise)
    el = np.degrees(np.arctan2(-vv, np.hypot(uu, camera.fx)))
    cols = W / 2.0 + (heading_deg + az) / 360.0 * W
    rows = H / 2.0 - el / vfov * H
    return _sample_wrap(pano, rows, cols)


def _sample_wrap(img: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear sample at continuous pixel-edge coordinates, columns wrapping, rows clamped."""
    H, W = img.shape[:2]
    r = np.clip(np.asarray(rows, np.float64) - 0.5, 0.0, H - 1.0)
    c = np.asarray(cols, np.float64) - 0.5
    r0 = np.floor(r).astype(np.int64)
    r1 = np.minimum(r0 + 1, H - 1)
    c0f = np.floor(c)
    c0 = c0f.astype(np.int64) % W
    c1 = (c0 + 1) % W
    fr = (r - r0).astype(np.float32)
    fc = (c - c0f).astype(np.float32)
    im = img.astype(np.float32, copy=False)
    if img.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = im[r0, c0] * (1 - fc) + im[r0, c1] * fc
    bot = im[r1, c0] * (1 - fc) + im[r1, c1] * fc
    return np.clip(top * (1 - fr) + bot * fr + 0.5, 0, 255).astype(np.uint8)


def heading_up_tile(sources: Sequence[Tuple[np.ndarray, float, float]], heading_deg: float, side_px: float,
                    out_px: int, fill: float = 0.0) -> Tuple[np.ndarray, float]:
    """Square crop of north-up images, ``side_px`` source pixels wide, rotated so ``heading_deg`` points up.

    ``sources``: (image [H, W, C], col, row) in priority order, where (col, row) is the crop
    centre in that image's continuous pixel coordinates; all share one ground resolution.
    Each output pixel comes from the first source that contains it, else ``fill``.
    Returns (uint8 [out_px, out_px, C], fraction of the tile covered by the sources).
    """
    n = int(out_px)
    s = side_px / n
    k = (np.arange(n) + 0.5 - n / 2.0) * s
    right, up = np.meshgrid(k, -k)  # row 0 is ahead
    h = math.radians(heading_deg)
    sh, ch = math.sin(h), math.cos(h)
    shape = sources[0][0].shape[2:]  # () for grey, (C,) for colour
    out = np.full((n, n) + shape, fill, np.float32)
    done = np.zeros((n, n), bool)
    for img, pc, pr in sources:
        H, W = img.shape[:2]
        cols = pc + up * sh + right * ch  # image columns grow east, rows grow south
        rows = pr - up * ch + right * sh
        take = ~done & (rows >= 0) & (rows <= H) & (cols >= 0) & (cols <= W)
        if take.any():
            out[take] = sample_bilinear(img, rows[take], cols[take])
            done |= take
        if done.all():
            break
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), float(done.mean())


# ---------------------------------------------------------------------------------------------- image work


@dataclass(frozen=True)
class _Render:
    out: str
    width: int
    height: int
    hfov_deg: float
    pano_vfov_deg: Optional[float]
    tile_px: int
    panorama: bool  # ground sources are panoramas (else limited-FOV frames)


def _save(arr_or_img, path: Path) -> None:
    """Write atomically (a frame shared by several sequences may be written by two workers at once)."""
    from PIL import Image

    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    img.save(tmp, format="JPEG", **JPEG)
    os.replace(tmp, path)


def _open_rgb(path: str, min_size: Optional[Tuple[int, int]] = None):
    """RGB image; a JPEG larger than ``min_size`` is decoded at a reduced DCT scale (never below it).

    Returns (image, original (width, height)).
    """
    from PIL import Image

    with Image.open(path) as im:
        size = im.size
        if min_size is not None:
            im.draft("RGB", min_size)
        return im.convert("RGB"), size


def fit_frame(img, width: int, height: int):
    """A limited-FOV frame at width x height: rows centre-cropped to W:H first if it is taller (FOV kept)."""
    from PIL import Image

    w, h = img.size
    want_h = int(round(w * height / width))
    if h > want_h:
        top = (h - want_h) // 2
        img = img.crop((0, top, w, top + want_h))
    return img.resize((width, height), Image.LANCZOS) if img.size != (width, height) else img


def _panorama_target_width(camera: PinholeCamera) -> int:
    return int(math.ceil(2.0 * math.pi * camera.fx))  # panorama width matching the view's centre resolution


def _panorama_view(img, heading_deg: float, camera: PinholeCamera, pano_vfov_deg: float) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    target = _panorama_target_width(camera)
    if w > 1.25 * target:  # low-pass before bilinear sampling
        img = img.resize((target, max(1, int(round(h * target / w)))), Image.LANCZOS)
    return equirect_to_pinhole(np.asarray(img), heading_deg, camera, pano_vfov_deg)


def _covers(w: float, h: float, cx: float, cy: float, side: float, heading_deg: float) -> bool:
    """Whether a w x h image holds the whole square of ``side`` centred at (cx, cy), rotated by the heading."""
    t = math.radians(heading_deg)
    half = side / 2.0
    ex = half * (abs(math.cos(t)) + abs(math.sin(t)))  # half extents of the rotated square
    return cx - ex >= 0 and cx + ex <= w and cy - ex >= 0 and cy + ex <= h


def _aerial_tile(job: _Job, r: _Render) -> Tuple[np.ndarray, float]:
    from PIL import Image

    first = _open_rgb(job.aerial_sources[0][0])[0]
    if not job.rotate:
        w, h = first.size
        s = min(w, h)
        sq = first.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        return np.asarray(sq.resize((r.tile_px, r.tile_px), Image.LANCZOS)), 1.0
    imgs = [(first,) + tuple(job.aerial_sources[0][1:])]
    w, h = first.size
    k = w / (job.aerial_ref_px or w)
    if not _covers(w, h, w / 2 + imgs[0][1] * k, h / 2 + imgs[0][2] * k, job.aerial_side * w, job.heading_deg):
        for path, dc, dr in job.aerial_sources[1:]:
            if os.path.isfile(path):  # a missing semi-positive only narrows the coverage
                imgs.append((_open_rgb(path)[0], dc, dr))
    W0 = first.size[0]
    ref = job.aerial_ref_px or W0
    side = job.aerial_side * W0  # pixels of the first image
    f = r.tile_px / side
    sources = []
    for im, dc, dr in imgs:
        w, h = im.size
        k = w / ref  # this image's pixels per reference pixel
        cx, cy = w / 2.0 + dc * k, h / 2.0 + dr * k
        if f < 0.75:  # low-pass before bilinear sampling
            nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
            im = im.resize((nw, nh), Image.LANCZOS)
            cx, cy = cx * nw / w, cy * nh / h
        sources.append((np.asarray(im), cx, cy))
    side_now = side * (sources[0][0].shape[1] / W0)
    return heading_up_tile(sources, job.heading_deg, side_now, r.tile_px)


def _run_job(job: _Job, r: _Render) -> Tuple[str, float]:
    """Write one sequence's images; returns ("", tile coverage) or (the missing input, 0)."""
    for path in [p for p, _ in job.ground] + [job.aerial_sources[0][0]]:
        if not os.path.isfile(path):
            return path, 0.0
    out = Path(r.out)
    cam = PinholeCamera(r.width, r.height, r.hfov_deg)
    for src, dst in job.ground:
        if (out / dst).exists():
            continue  # shared with a sequence written before
        if r.panorama:
            t = _panorama_target_width(cam)
            img, (w0, h0) = _open_rgb(src, (t, max(1, t // 4)))
            vfov = 360.0 * h0 / w0 if r.pano_vfov_deg is None else r.pano_vfov_deg
            view = _panorama_view(img, job.heading_deg, cam, vfov)
        else:
            img, _ = _open_rgb(src, (r.width, r.height))
            view = fit_frame(img, r.width, r.height)
        _save(view, out / dst)
    tile, coverage = _aerial_tile(job, r)
    _save(tile, out / job.aerial_dst)
    return "", coverage

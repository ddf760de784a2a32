"""Model inputs rendered from a small generated town: consecutive ground keyframes along a road and
the heading-up aerial tiles at the same poses.

Made for the checks and benchmarks that want real-looking pictures rather than noise: the shipped
parity fixture of the ONNX export (``geoloc export parity-inputs``, see
``inference/parity_inputs.py``), the parity tests and ``bench/``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def synthetic_inputs(cfg, n_frames: int = 8, n_tiles: int = 4, seed: int = 11) -> Tuple[np.ndarray, np.ndarray]:
    """``n_frames`` ground frames rendered 5 m apart along the longest road of a 400 m generated town
    (consecutive keyframes, as the node sees them) and ``n_tiles`` heading-up aerial tiles cut at those
    poses; sizes, field of view and tile side from ``cfg`` (a ``ModelConfig``: ``ground_size``,
    ``camera_hfov_deg``, ``tile_m``, ``aerial_size``). uint8 [N, H, W, 3] each."""
    from ..core.camera import PinholeCamera
    from ..core.tiles import sample_bilinear, tile_grid
    from .generate import generate_world
    from .render import Appearance, GroundRenderer

    world = generate_world(seed=seed, size_m=400.0, gsd_m=0.5)
    H, W = cfg.ground_size
    renderer = GroundRenderer(world, PinholeCamera(width=W, height=H, hfov_deg=cfg.camera_hfov_deg),
                              Appearance.sample(np.random.default_rng(seed)))
    lengths = [float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) for p in world.roads.edge_points]
    pts = np.asarray(world.roads.edge_points[int(np.argmax(lengths))], float)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s_at = np.concatenate([[0.0], np.cumsum(seg)])
    poses = []
    for s in 5.0 + 5.0 * np.arange(max(n_frames, n_tiles)):
        s = float(min(s, s_at[-1] - 1e-3))
        i = int(min(np.searchsorted(s_at, s, side="right") - 1, len(seg) - 1))
        f = (s - s_at[i]) / max(seg[i], 1e-9)
        p = pts[i] + f * (pts[i + 1] - pts[i])
        d = pts[i + 1] - pts[i]
        poses.append((float(p[0]), float(p[1]), float(np.arctan2(d[1], d[0]))))
    frames = np.stack([renderer.render(*pose) for pose in poses[:n_frames]])
    tiles = []
    for x, y, yaw in poses[:n_tiles]:
        gx, gy = tile_grid(x, y, yaw, cfg.tile_m, cfg.aerial_size[0])
        r, c = world.xy_to_rc(gx, gy)
        tiles.append(np.clip(sample_bilinear(world.ortho, r - 0.5, c - 0.5), 0, 255).astype(np.uint8))
    return frames.astype(np.uint8), np.stack(tiles)

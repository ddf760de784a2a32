"""The town's plan for ``sim.generate``: the jittered, rotated street grid (curves, removed edges,
arterials) as a road graph, and the land use of each block (downtown, mixed, residential, park, lot, field)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, List

import numpy as np

from .world import RoadGraph

if TYPE_CHECKING:
    from .generate import TownParams


# ---------------------------------------------------------------------------------------
# road network


@dataclass
class _Grid:
    road_graph: RoadGraph
    node_xy: np.ndarray  # [R, C, 2] jittered grid nodes (also those outside the world)
    inside: np.ndarray  # [R, C] node is inside the world
    node_index: np.ndarray  # [R, C] index into road_graph.nodes or -1
    edge_urban: np.ndarray  # [E] bool


def _make_grid(rng, size_m: float, p: TownParams) -> _Grid:
    half = size_m / 2.0
    ext = half * math.sqrt(2.0) + p.block_max_m  # covers the square after rotation

    def lines():
        out = [-ext]
        while out[-1] < ext:
            out.append(out[-1] + rng.uniform(p.block_min_m, p.block_max_m))
        return np.array(out)

    xs, ys = lines(), lines()
    rot = math.radians(rng.uniform(-p.max_rotation_deg, p.max_rotation_deg))
    R, C = len(ys), len(xs)
    gx, gy = np.meshgrid(xs, ys)
    gx = gx + rng.uniform(-p.node_jitter_m, p.node_jitter_m, gx.shape)
    gy = gy + rng.uniform(-p.node_jitter_m, p.node_jitter_m, gy.shape)
    c, s = math.cos(rot), math.sin(rot)
    node_xy = np.stack([gx * c - gy * s, gx * s + gy * c], axis=-1)
    margin = 5.0
    inside = (np.abs(node_xy[..., 0]) <= half - margin) & (np.abs(node_xy[..., 1]) <= half - margin)

    # arterials: one or two grid lines per axis near the centre
    def pick_arterials(n):
        mid = n // 2
        k = int(rng.integers(1, 3))
        cand = np.arange(max(mid - 3, 1), min(mid + 4, n - 1))
        return set(int(i) for i in rng.choice(cand, size=min(k, len(cand)), replace=False))

    art_rows, art_cols = pick_arterials(R), pick_arterials(C)

    # candidate edges between grid neighbours, both ends inside
    cand = []  # (ra, ca, rb, cb, arterial)
    for r in range(R):
        for cc in range(C):
            if not inside[r, cc]:
                continue
            if cc + 1 < C and inside[r, cc + 1]:
                cand.append((r, cc, r, cc + 1, r in art_rows))
            if r + 1 < R and inside[r + 1, cc]:
                cand.append((r, cc, r + 1, cc, cc in art_cols))
    keep = np.ones(len(cand), bool)
    removable = [i for i, e in enumerate(cand) if not e[4]]
    n_remove = int(p.removed_edge_fraction * len(removable))
    order = rng.permutation(removable)
    removed = 0
    for i in order:
        if removed >= n_remove:
            break
        keep[i] = False
        if not _connected([cand[j] for j in range(len(cand)) if keep[j]]):
            keep[i] = True
            continue
        removed += 1
    cand = [e for e, k in zip(cand, keep) if k]

    node_index = -np.ones((R, C), np.int64)
    nodes: List[np.ndarray] = []

    def nid(r, cc):
        if node_index[r, cc] < 0:
            node_index[r, cc] = len(nodes)
            nodes.append(node_xy[r, cc])
        return int(node_index[r, cc])

    uv, pts, width, lanes, kind, urban = [], [], [], [], [], []
    urban_r = p.urban_radius * size_m
    for (ra, ca, rb, cb, art) in cand:
        a, b = node_xy[ra, ca], node_xy[rb, cb]
        is_urban = bool(np.hypot(*((a + b) / 2)) < urban_r * 1.15)
        curved = (not art) and rng.random() < p.curve_fraction
        if curved:
            L = float(np.hypot(*(b - a)))
            amp = rng.uniform(0.08, 0.18) * L * rng.choice([-1.0, 1.0])
            t = np.linspace(0.0, 1.0, 17)
            nrm = np.array([-(b - a)[1], (b - a)[0]]) / L
            poly = a[None] + t[:, None] * (b - a)[None] + (amp * np.sin(np.pi * t))[:, None] * nrm[None]
        else:
            poly = np.stack([a, b])
        uv.append((nid(ra, ca), nid(rb, cb)))
        pts.append(poly)
        if art:
            width.append(p.arterial_width_m)
            lanes.append(4)
            kind.append("arterial")
        elif is_urban:
            width.append(round(float(rng.uniform(*p.street_width_m)), 2))
            lanes.append(2)
            kind.append("curve" if curved else "street")
        else:
            width.append(p.rural_width_m)
            lanes.append(2)
            kind.append("rural")
        urban.append(is_urban or art)
    graph = RoadGraph(nodes=np.array(nodes, float).reshape(-1, 2), edge_uv=np.array(uv, np.int64).reshape(-1, 2),
                      edge_points=pts, edge_width=np.array(width, float), edge_lanes=np.array(lanes, np.int64),
                      edge_kind=kind)
    return _Grid(road_graph=graph, node_xy=node_xy, inside=inside, node_index=node_index,
                 edge_urban=np.array(urban, bool))


def _connected(edges) -> bool:
    adj = {}
    for (ra, ca, rb, cb, _) in edges:
        adj.setdefault((ra, ca), []).append((rb, cb))
        adj.setdefault((rb, cb), []).append((ra, ca))
    if not adj:
        return True
    start = next(iter(adj))
    seen, stack = {start}, [start]
    while stack:
        for n in adj[stack.pop()]:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return len(seen) == len(adj)


# ---------------------------------------------------------------------------------------
# land use

DOWNTOWN, MIXED, RESIDENTIAL, PARK, PARKING_LOT, FIELD = range(6)


def _assign_land_use(rng, grid: _Grid, size_m: float, p: TownParams) -> np.ndarray:
    """Land use per grid cell [R-1, C-1]; -1 for cells not fully inside the world."""
    R, C = grid.inside.shape
    lu = -np.ones((R - 1, C - 1), np.int64)
    for r in range(R - 1):
        for c in range(C - 1):
            corners_in = int(grid.inside[r:r + 2, c:c + 2].sum())
            if corners_in < 4:
                if corners_in > 0:
                    lu[r, c] = FIELD  # cut by the world's edge: farmland, no buildings
                continue
            ctr = grid.node_xy[r:r + 2, c:c + 2].reshape(-1, 2).mean(0)
            d = float(np.hypot(*ctr)) / size_m
            u = rng.random()
            if d < p.downtown_radius:
                use = DOWNTOWN
            elif d < p.downtown_radius + 0.08:
                use = MIXED
            elif d < p.urban_radius:
                use = RESIDENTIAL
            else:
                use = FIELD if rng.random() < 0.75 else RESIDENTIAL
            if use in (DOWNTOWN, MIXED, RESIDENTIAL):
                if u < p.park_fraction:
                    use = PARK
                elif u < p.park_fraction + p.parking_fraction * (2.0 if use != RESIDENTIAL else 0.5):
                    use = PARKING_LOT
            lu[r, c] = use
    return lu


def _cell_quad(grid: _Grid, r: int, c: int) -> np.ndarray:
    """Cell corners CCW in local metres (grid rows grow with y before rotation)."""
    n = grid.node_xy
    return np.stack([n[r, c], n[r, c + 1], n[r + 1, c + 1], n[r + 1, c]])


def _in_quad(quad: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points strictly inside a convex CCW quad."""
    inside = np.ones(len(pts), bool)
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        cross = (b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0])
        inside &= cross > 0
    return inside

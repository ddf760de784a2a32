"""Painting the town's contents onto ``sim.generate``'s canvas: carriageways, sidewalks, markings and
crosswalks, buildings along the block frontages, trees, parking lots with cars, fields and park paths."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, List, Tuple

import numpy as np

from .townlayout import DOWNTOWN, FIELD, MIXED, PARK, PARKING_LOT, RESIDENTIAL, _cell_quad, _Grid, _in_quad
from .world import Buildings, RoadGraph, Sem

if TYPE_CHECKING:
    from .generate import TownParams, _Canvas


# ---------------------------------------------------------------------------------------
# roads


def _rasterize_roads(g: _Canvas, roads: RoadGraph, edge_urban: np.ndarray, p: TownParams) -> None:
    shape = g.shape
    dist = np.full(shape, np.inf, np.float32)
    lat = np.zeros(shape, np.float32)
    along = np.zeros(shape, np.float32)
    edge_of = -np.ones(shape, np.int32)
    road = np.zeros(shape, bool)
    walk = np.zeros(shape, bool)
    for e in range(roads.num_edges):
        w = float(roads.edge_width[e])
        sw = p.sidewalk_m if edge_urban[e] else 0.0
        pts = roads.edge_points[e]
        seg = np.diff(pts, axis=0)
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        reach = w / 2 + sw + 1.0
        for k in range(len(seg)):
            a, d, L = pts[k], seg[k], seg_len[k]
            lo, hi = np.minimum(a, a + d) - reach, np.maximum(a, a + d) + reach
            win = g.window(lo[0], lo[1], hi[0], hi[1])
            if win is None:
                continue
            sr, sc, X, Y = win
            dx, dy = X - a[0], Y - a[1]
            t = np.clip((dx * d[0] + dy * d[1]) / (L * L), 0.0, 1.0)
            ex, ey = dx - t * d[0], dy - t * d[1]
            dd = np.hypot(ex, ey).astype(np.float32)
            upd = dd < dist[sr, sc]
            dist[sr, sc][upd] = dd[upd]
            lat[sr, sc][upd] = ((d[0] * dy - d[1] * dx) / L)[upd]
            along[sr, sc][upd] = (cum[k] + t * L)[upd]
            edge_of[sr, sc][upd] = e
            road[sr, sc] |= dd <= w / 2
            if sw > 0:
                walk[sr, sc] |= dd <= w / 2 + sw

    g.sem[walk] = Sem.SIDEWALK
    g.sem[road] = Sem.ROAD
    urban_edge = np.append(edge_urban, False)[edge_of]
    g.road_kind[road] = np.where(urban_edge[road], 1, 2)

    # intersections: no lane markings inside, crosswalks just outside (urban, degree >= 3)
    node_r = np.zeros(len(roads.nodes))
    for n in range(len(roads.nodes)):
        es = roads.edges_at(n)
        node_r[n] = max(roads.edge_width[e] for e in es) / 2 + 0.5 if es else 0.0
    junction = np.zeros(shape, bool)
    for n in range(len(roads.nodes)):
        if roads.degree(n) < 3:
            continue
        x, y = roads.nodes[n]
        rr = node_r[n]
        win = g.window(x - rr, y - rr, x + rr, y + rr)
        if win is not None:
            sr, sc, X, Y = win
            junction[sr, sc] |= np.hypot(X - x, Y - y) <= rr

    e_idx = np.where(road, edge_of, -1)
    m = road & ~junction & (e_idx >= 0)
    ei = e_idx[m]
    w_e = roads.edge_width[ei]
    lanes = roads.edge_lanes[ei]
    la, al = lat[m], along[m]
    alat = np.abs(la)
    sem = np.full(ei.shape, Sem.ROAD, np.uint8)
    arterial = lanes >= 4
    # centre line: double yellow on arterials, dashed yellow on streets (rural: dashed too)
    dbl = arterial & (np.abs(alat - 0.3) <= 0.26)
    dash = ~arterial & (alat <= 0.25) & (np.mod(al, 9.0) < 3.0)
    sem[dbl | dash] = Sem.MARKING_YELLOW
    # lane separators on 4-lane roads, edge lines on arterials
    sep = arterial & (np.abs(alat - w_e / 4) <= 0.25) & (np.mod(al, 9.0) < 3.0)
    edge = arterial & (np.abs(alat - (w_e / 2 - 0.45)) <= 0.25)
    sem[sep | edge] = Sem.MARKING
    # crosswalks: zebra band 1..4 m beyond the junction radius at urban junction ends
    L_e = np.array([roads.length(e) for e in range(roads.num_edges)] + [0.0])
    u_n, v_n = roads.edge_uv[ei, 0], roads.edge_uv[ei, 1]
    deg_u = np.array([roads.degree(n) for n in range(len(roads.nodes))] + [0])
    ru, rv = node_r[u_n], node_r[v_n]
    urb = edge_urban[ei]
    near_u = (al >= ru + 1.0) & (al <= ru + 4.0) & (deg_u[u_n] >= 3)
    near_v = (L_e[ei] - al >= rv + 1.0) & (L_e[ei] - al <= rv + 4.0) & (deg_u[v_n] >= 3)
    zebra = urb & (near_u | near_v) & (np.mod(la + 50.0, 1.2) < 0.6) & (alat <= w_e / 2 - 0.3)
    sem[zebra] = Sem.MARKING
    g.sem[m] = sem


# ---------------------------------------------------------------------------------------
# buildings

_FACADES = {
    DOWNTOWN: [(120, 135, 150), (150, 160, 170), (185, 180, 170), (95, 105, 120), (200, 195, 185), (140, 95, 80)],
    MIXED: [(160, 85, 65), (190, 170, 140), (210, 205, 195), (130, 120, 110), (175, 110, 80), (120, 140, 150)],
    RESIDENTIAL: [(225, 220, 205), (200, 180, 150), (170, 190, 205), (215, 200, 160), (180, 90, 70),
                  (150, 170, 140), (235, 235, 230), (120, 110, 100)],
}
_ROOFS_FLAT = [(150, 150, 148), (120, 122, 125), (175, 172, 165), (95, 95, 100), (200, 200, 195)]
_ROOFS_GABLE = [(90, 60, 50), (70, 70, 75), (150, 80, 55), (110, 95, 80), (60, 65, 80), (130, 120, 105)]


def _place_buildings(rng, g: _Canvas, grid: _Grid, landuse: np.ndarray, p: TownParams) -> Buildings:
    rows: List[Tuple] = []
    R, C = landuse.shape
    for r in range(R):
        for c in range(C):
            use = int(landuse[r, c])
            if use not in (DOWNTOWN, MIXED, RESIDENTIAL):
                continue
            quad = _cell_quad(grid, r, c)
            for k in range(4):
                a, b = quad[k], quad[(k + 1) % 4]
                _frontage(rng, g, quad, a, b, use, p, rows)
    if not rows:
        return Buildings.empty()
    cols = list(zip(*rows))
    b = Buildings(cx=np.array(cols[0]), cy=np.array(cols[1]), half_len=np.array(cols[2]), half_wid=np.array(cols[3]),
                  yaw=np.array(cols[4]), eave_h=np.array(cols[5]), ridge_h=np.array(cols[6]),
                  facade_rgb=np.array(cols[7], np.uint8), roof_rgb=np.array(cols[8], np.uint8),
                  floor_h=np.array(cols[9]), window_spacing=np.array(cols[10]))
    return b


def _frontage(rng, g: _Canvas, quad, a, b, use, p: TownParams, rows: List[Tuple]) -> None:
    """Place buildings along one side a->b of a block (inward = left of a->b for a CCW quad)."""
    side = b - a
    L = float(np.hypot(*side))
    if L < 20:
        return
    d = side / L
    n = np.array([-d[1], d[0]])
    yaw = math.atan2(d[1], d[0])
    road_clear = p.street_width_m[1] / 2 + p.sidewalk_m
    if use == DOWNTOWN:
        wid_rng, dep_rng, setback, gap = (16, 40), (16, 30), (0.5, 2.0), (0.0, 3.0)
    elif use == MIXED:
        wid_rng, dep_rng, setback, gap = (12, 26), (12, 20), (1.0, 4.0), (1.0, 6.0)
    else:
        wid_rng, dep_rng, setback, gap = (8, 14), (8, 12), (4.0, 8.0), (4.0, 10.0)
    t = rng.uniform(2.0, 10.0) + road_clear
    while True:
        w = rng.uniform(*wid_rng)
        if t + w > L - road_clear - 2.0:
            break
        depth = rng.uniform(*dep_rng)
        off = road_clear + rng.uniform(*setback) + depth / 2
        ctr = a + d * (t + w / 2) + n * off
        t += w + rng.uniform(*gap)
        hl, hw = w / 2, depth / 2
        # residential houses often sit with their ridge along the street; keep the axis along the street
        corners = np.array([ctr + sx * hl * d + sy * hw * n for sx, sy in ((1, 1), (-1, 1), (-1, -1), (1, -1))])
        if not _in_quad(quad, corners).all():
            continue
        res = g.box(ctr[0], ctr[1], hl + 1.0, hw + 1.0, yaw)
        if res is None:
            continue
        win, m, _, _ = res
        if np.any(g.sem[win][m] != Sem.GRASS):
            continue  # would overlap a road, sidewalk, another building
        if use == DOWNTOWN:
            eave = float(min(12.0 + rng.gamma(2.0, 9.0), 80.0))
            ridge = 0.0
        elif use == MIXED:
            eave = float(rng.uniform(6.0, 16.0))
            ridge = 0.0
        else:
            eave = float(rng.uniform(3.0, 7.0))
            ridge = float(rng.uniform(1.5, 3.5)) if rng.random() < 0.8 else 0.0
        facade = _FACADES[use][int(rng.integers(len(_FACADES[use])))]
        roof_pal = _ROOFS_GABLE if ridge > 0 else _ROOFS_FLAT
        roof = roof_pal[int(rng.integers(len(roof_pal)))]
        jit = rng.integers(-12, 13, 3)
        facade = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(facade, jit))
        roof = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(roof, jit))
        floor_h = float(rng.uniform(2.9, 3.6))
        win_sp = float(rng.uniform(2.4, 4.0))
        idx = len(rows) + 1
        rows.append((float(ctr[0]), float(ctr[1]), hl, hw, yaw, eave, ridge, facade, roof, floor_h, win_sp))
        res = g.box(ctr[0], ctr[1], hl, hw, yaw)
        win, m, u, v = res
        hgt = (eave + ridge * (1.0 - np.abs(v) / hw)).astype(np.float32)
        g.height[win][m] = hgt[m]
        g.sem[win][m] = Sem.BUILDING
        g.oid[win][m] = idx


# ---------------------------------------------------------------------------------------
# trees, parking lots, fields, parks

def _place_trees_and_lots(rng, g: _Canvas, grid: _Grid, landuse, roads: RoadGraph, edge_urban, p: TownParams):
    trees: List[Tuple[float, float, float, float, int]] = []  # x, y, radius, height, tone
    R, C = landuse.shape
    for r in range(R):
        for c in range(C):
            use = int(landuse[r, c])
            quad = _cell_quad(grid, r, c)
            if use == PARKING_LOT:
                _parking_lot(rng, g, quad, p)
            elif use == FIELD:
                _field(rng, g, quad)
                n_hedge = int(rng.integers(0, 12))
                for _ in range(n_hedge):
                    trees.append(_tree_in_quad(rng, quad, (2.5, 5.0), (6.0, 14.0)))
            elif use == PARK:
                for _ in range(int(rng.integers(25, 70))):
                    trees.append(_tree_in_quad(rng, quad, (2.5, 5.5), (7.0, 16.0)))
                _park_paths(rng, g, quad)
            elif use == RESIDENTIAL:
                for _ in range(int(rng.integers(6, 20))):
                    trees.append(_tree_in_quad(rng, quad, (2.0, 4.5), (5.0, 13.0)))
            elif use == DOWNTOWN:
                _pave(g, quad, p)
            elif use == MIXED:
                if rng.random() < 0.5:
                    _pave(g, quad, p)
                for _ in range(int(rng.integers(0, 6))):
                    trees.append(_tree_in_quad(rng, quad, (2.0, 3.5), (5.0, 10.0)))
    # street trees on urban, non-arterial streets, in the grass strip beyond the sidewalk
    for e in range(roads.num_edges):
        if not edge_urban[e] or roads.edge_lanes[e] >= 4 or rng.random() < 0.35:
            continue
        pts = roads.edge_points[e]
        L = roads.length(e)
        spacing = rng.uniform(9.0, 16.0)
        off = roads.edge_width[e] / 2 + p.sidewalk_m + 1.8
        for s_ in np.arange(rng.uniform(12.0, 18.0), L - 12.0, spacing):
            pt, dirv = _point_along(pts, s_)
            nrm = np.array([-dirv[1], dirv[0]])
            for side in (-1.0, 1.0):
                if rng.random() < 0.75:
                    q = pt + side * off * nrm
                    trees.append((float(q[0]), float(q[1]), float(rng.uniform(1.8, 3.2)),
                                  float(rng.uniform(5.0, 10.0)), int(rng.integers(-20, 21))))
    for (x, y, rad, h, tone) in trees:
        win = g.window(x - rad, y - rad, x + rad, y + rad)
        if win is None:
            continue
        sr, sc, X, Y = win
        d2 = ((X - x) ** 2 + (Y - y) ** 2) / (rad * rad)
        canopy = d2 <= 1.0
        # trees grow on grass/field/park ground, never on roads, sidewalks, lots or buildings
        ok = canopy & np.isin(g.sem[sr, sc], (Sem.GRASS, Sem.FIELD, Sem.DIRT, Sem.TREE))
        hz = (h * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)) * 0.45 + h * 0.55).astype(np.float32)
        upd = ok & (hz > g.height[sr, sc])
        g.height[sr, sc][upd] = hz[upd]
        g.sem[sr, sc][upd] = Sem.TREE
        g.tone[sr, sc][upd] = tone
    return trees


def _tree_in_quad(rng, quad, rad_rng, h_rng):
    lo, hi = quad.min(0), quad.max(0)
    for _ in range(20):
        pt = rng.uniform(lo, hi)
        if _in_quad(quad, pt[None])[0]:
            break
    return (float(pt[0]), float(pt[1]), float(rng.uniform(*rad_rng)), float(rng.uniform(*h_rng)),
            int(rng.integers(-20, 21)))


def _point_along(pts: np.ndarray, s: float):
    seg = np.diff(pts, axis=0)
    L = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(L)])
    k = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(seg) - 1))
    t = (s - cum[k]) / max(L[k], 1e-9)
    return pts[k] + t * seg[k], seg[k] / max(L[k], 1e-9)


def _quad_window(g: _Canvas, quad, inset: float):
    lo, hi = quad.min(0), quad.max(0)
    win = g.window(lo[0], lo[1], hi[0], hi[1])
    if win is None:
        return None
    sr, sc, X, Y = win
    inside = _in_quad(_inset_quad(quad, inset), np.stack([X.ravel(), Y.ravel()], 1)).reshape(X.shape)
    return sr, sc, X, Y, inside


def _inset_quad(quad, inset):
    ctr = quad.mean(0)
    out = []
    for q in quad:
        v = q - ctr
        n = np.hypot(*v)
        out.append(ctr + v * max(n - inset * 1.4, 1.0) / n)
    return np.array(out)


def _parking_lot(rng, g: _Canvas, quad, p: TownParams):
    res = _quad_window(g, quad, p.street_width_m[1] / 2 + p.sidewalk_m + 1.0)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    free = inside & (g.sem[sr, sc] == Sem.GRASS)
    sem = g.sem[sr, sc]
    sem[free] = Sem.PARKING
    # stalls: 2.6 m wide, 5.5 m deep, rows separated by 7 m aisles, aligned to the first side
    d = quad[1] - quad[0]
    d = d / np.hypot(*d)
    u = (X - quad[0][0]) * d[0] + (Y - quad[0][1]) * d[1]
    v = -(X - quad[0][0]) * d[1] + (Y - quad[0][1]) * d[0]
    period = 2 * 5.5 + 7.0
    vm = np.mod(v, period)
    in_stall = vm < 11.0
    line = in_stall & (np.mod(u, 2.6) < 0.3)
    sem[free & line] = Sem.MARKING
    # parked cars in some stalls (static: they are in the survey image too)
    stall_u = np.arange(np.floor(u[free].min() / 2.6) if free.any() else 0, np.ceil(u[free].max() / 2.6) if free.any() else 0)
    if not free.any():
        return
    v_rows = np.arange(np.floor(v[free].min() / period), np.ceil(v[free].max() / period) + 1)
    for vr in v_rows:
        for half in (0, 1):
            vc = vr * period + 2.75 + half * 5.5
            for su in stall_u:
                occupied = rng.random() <= 0.45
                uc = su * 2.6 + 1.45
                cx = quad[0][0] + uc * d[0] - vc * d[1]
                cy = quad[0][1] + uc * d[1] + vc * d[0]
                box = g.box(cx, cy, 0.9, 2.2, math.atan2(d[1], d[0]))
                if box is None:
                    continue
                win, m, _, _ = box
                if not np.all(g.sem[win][m] == Sem.PARKING):
                    continue
                (g.cars if occupied else g.free_stalls).append((float(cx), float(cy), math.atan2(d[1], d[0])))
                if not occupied:
                    continue
                g.sem[win][m] = Sem.CAR
                g.height[win][m] = 1.5
                g.tone[win][m] = int(rng.integers(0, 8))  # colour index into the car palette


def _pave(g: _Canvas, quad, p: TownParams):
    """Downtown block interiors: concrete plazas and courtyards instead of lawns."""
    res = _quad_window(g, quad, p.street_width_m[1] / 2 + p.sidewalk_m)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    g.sem[sr, sc][inside & (g.sem[sr, sc] == Sem.GRASS)] = Sem.SIDEWALK


def _field(rng, g: _Canvas, quad):
    res = _quad_window(g, quad, 6.0)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    free = inside & (g.sem[sr, sc] == Sem.GRASS)
    ang = rng.uniform(0, np.pi)
    stripes = np.mod(X * math.cos(ang) + Y * math.sin(ang), rng.uniform(3.0, 6.0))
    g.sem[sr, sc][free] = Sem.FIELD
    tone = g.tone[sr, sc]
    tone[free] = (np.where(stripes[free] < 1.2, -14, 6) + int(rng.integers(-25, 25))).astype(np.int16)


def _park_paths(rng, g: _Canvas, quad):
    res = _quad_window(g, quad, 8.0)
    if res is None:
        return
    sr, sc, X, Y, inside = res
    a, b = quad[0], quad[2]
    for (s, e) in ((quad[0], quad[2]), (quad[1], quad[3])):
        d = e - s
        L = np.hypot(*d)
        t = np.clip(((X - s[0]) * d[0] + (Y - s[1]) * d[1]) / (L * L), 0, 1)
        dist = np.hypot(X - s[0] - t * d[0], Y - s[1] - t * d[1])
        m = inside & (dist <= 1.5) & (g.sem[sr, sc] == Sem.GRASS)
        g.sem[sr, sc][m] = Sem.DIRT
    del a, b

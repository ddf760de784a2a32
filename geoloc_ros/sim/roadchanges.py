"""The road as it is since the survey (``Conditions.road_changes``): repainted markings, new asphalt
and a construction zone, in the renderer's copies of the rasters only (never the world, never the
orthophoto).

* Marking segments: every road edge is cut into 9 m stations (one dash period, the whole
  carriageway wide); a station with paint is a marking segment. A share F of them changed:
  40 % removed (asphalt with a faint ghost of the paint), 35 % shifted 0.3-1 m across the road,
  25 % newly painted (the paint copied 4.5 m along the road into the gaps, fresh and bright).
* New asphalt: about F x (road length / 250 m) dark patches (4-15 m x 2-3.5 m) in the carriageway;
  no paint on them yet.
* One construction zone (50-100 m): on the ego's path 30-70 % into the drive when the drive is
  known, else on a random edge. Cones every 4 m at the kerb of the ego's side (never closer than
  1.3 m to the ego's lane centre), worn asphalt between cones and kerb, the centre line erased and
  a temporary yellow line painted 0.8-1.2 m towards the other side (the shifted lane). Cones are
  0.75 m obstacles of class ``Sem.DIRT`` (no cone class in ``Sem``).
"""
from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from .world import Sem, rasterize_box

_PAINT = (Sem.MARKING, Sem.MARKING_YELLOW)
_CARRIAGEWAY = (Sem.ROAD, Sem.MARKING, Sem.MARKING_YELLOW)
_CONE_RGB = (240, 105, 20)
_TEMP_LINE_RGB = (236, 176, 32)
_STATION_M = 9.0


def _stations(roads, e: int, step: float, start: float):
    """(x, y, yaw, s) every ``step`` metres along edge e."""
    p = roads.edge_points[e].astype(float)
    seg = np.diff(p, axis=0)
    L = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(L)])
    out = []
    for s in np.arange(start, cum[-1] - 1e-6, step):
        i = min(int(np.searchsorted(cum, s, side="right")) - 1, len(seg) - 1)
        q = p[i] + (s - cum[i]) / max(L[i], 1e-9) * seg[i]
        out.append((float(q[0]), float(q[1]), math.atan2(seg[i][1], seg[i][0]), float(s)))
    return out


def _box(shape, world, cx, cy, hl, hw, yaw):
    res = rasterize_box(shape, world.xy_to_rc, cx, cy, hl, hw, yaw, world.meta.gsd_m)
    if res is None:
        return None
    r0, c0, m, u, v = res
    return (slice(r0, r0 + m.shape[0]), slice(c0, c0 + m.shape[1])), m, u, v, r0, c0


def _road_colour(sem_w, alb_w, m) -> np.ndarray:
    sel = m & (sem_w == Sem.ROAD)
    return np.median(alb_w[sel], axis=0).astype(np.float32) if sel.any() else np.array([78.0, 78.0, 82.0], np.float32)


def _move(sem, albedo, world, win, sel, u, v, r0, c0, yaw, du: float, dv: float, ghost: float, fresh: float) -> int:
    """Copy the paint ``sel`` of a window by (du along, dv across) the yaw frame onto plain road;
    ``ghost`` > 0 also erases the source to road colour + ghost. Returns the pixels painted."""
    g = world.meta.gsd_m
    c, s = math.cos(yaw), math.sin(yaw)
    rr, cc = np.nonzero(sel)
    cols = albedo[win][sel].astype(np.float32)
    classes = sem[win][sel]
    if ghost > 0:
        road = _road_colour(sem[win], albedo[win], np.ones(sel.shape, bool))
        albedo[win][sel] = np.clip(road + ghost, 0, 255).astype(np.uint8)
        sem[win][sel] = Sem.ROAD
    dx, dy = du * c - dv * s, du * s + dv * c
    tr = np.rint(r0 + rr - dy / g).astype(np.int64)
    tc = np.rint(c0 + cc + dx / g).astype(np.int64)
    H, W = sem.shape
    ok = (tr >= 0) & (tr < H) & (tc >= 0) & (tc < W)
    tr, tc, cols, classes = tr[ok], tc[ok], cols[ok], classes[ok]
    plain = sem[tr, tc] == Sem.ROAD
    sem[tr[plain], tc[plain]] = classes[plain]
    albedo[tr[plain], tc[plain]] = np.clip(cols[plain] * fresh, 0, 255).astype(np.uint8)
    return int(plain.sum())


def apply_road_changes(world, sem: np.ndarray, albedo: np.ndarray, height: np.ndarray, rng: np.random.Generator,
                       share: float, ego=None) -> Dict:
    """Change the renderer's ``sem`` / ``albedo`` / ``height`` copies in place; returns what was drawn."""
    roads = world.roads
    shape = sem.shape
    # ---- marking segments
    segs = []
    for e in range(roads.num_edges):
        hw = float(roads.edge_width[e]) / 2.0
        for (x, y, yaw, _) in _stations(roads, e, _STATION_M, _STATION_M / 2):
            segs.append((e, x, y, yaw, hw))
    painted = []
    for (e, x, y, yaw, hw) in segs:
        b = _box(shape, world, x, y, _STATION_M / 2, hw, yaw)
        if b is None:
            continue
        win, m, u, v, r0, c0 = b
        paint = m & np.isin(sem[win], _PAINT)
        if paint.sum() >= 3:
            painted.append((e, x, y, yaw, hw))
    n_total = len(painted)
    k = int(round(share * n_total))
    idx = np.sort(rng.choice(n_total, size=k, replace=False)) if k else np.zeros(0, int)
    counts = {"removed": 0, "shifted": 0, "new": 0}
    changed: List[Dict] = []
    for j in idx:
        e, x, y, yaw, hw = painted[int(j)]
        kind = str(rng.choice(["removed", "shifted", "new"], p=[0.4, 0.35, 0.25]))
        win, m, u, v, r0, c0 = _box(shape, world, x, y, _STATION_M / 2, hw, yaw)
        paint = m & np.isin(sem[win], _PAINT)
        rec = {"kind": kind, "edge": int(e), "xy": [round(x, 2), round(y, 2)]}
        if kind == "removed":
            road = _road_colour(sem[win], albedo[win], m)
            albedo[win][paint] = np.clip(road + 9.0, 0, 255).astype(np.uint8)
            sem[win][paint] = Sem.ROAD
        elif kind == "shifted":
            dv = float(rng.uniform(0.3, 1.0) * rng.choice([-1.0, 1.0]))
            rec["shift_m"] = round(dv, 3)
            _move(sem, albedo, world, win, paint, u, v, r0, c0, yaw, 0.0, dv, ghost=6.0, fresh=1.0)
        else:
            du = float(rng.choice([-1.0, 1.0]) * _STATION_M / 2)
            rec["along_m"] = du
            _move(sem, albedo, world, win, paint, u, v, r0, c0, yaw, du, 0.0, ghost=0.0, fresh=1.08)
        counts[kind] += 1
        changed.append(rec)
    # ---- new asphalt
    lengths = np.array([roads.length(e) for e in range(roads.num_edges)])
    n_patch = int(min(30, max(1, round(share * lengths.sum() / 250.0)))) if share > 0 else 0
    patches = []
    for _ in range(n_patch):
        e = int(rng.choice(roads.num_edges, p=lengths / lengths.sum()))
        st = _stations(roads, e, 1.0, 0.0)
        if not st:
            continue
        x, y, yaw, _ = st[int(rng.integers(len(st)))]
        hw = float(roads.edge_width[e]) / 2
        pl, pw = float(rng.uniform(4.0, 15.0)), float(rng.uniform(2.0, 3.5))
        off = float(rng.uniform(-(hw - pw / 2), hw - pw / 2))
        cx, cy = x - off * math.sin(yaw), y + off * math.cos(yaw)
        b = _box(shape, world, cx, cy, pl / 2, pw / 2, yaw)
        if b is None:
            continue
        win, m, *_ = b
        sel = m & np.isin(sem[win], _CARRIAGEWAY) & (height[win] < 0.05)
        tone = float(rng.uniform(38.0, 50.0))
        albedo[win][sel] = np.clip(tone + rng.normal(0.0, 2.0, (int(sel.sum()), 1)) + np.array([0.0, 0.0, 3.0]),
                                   0, 255).astype(np.uint8)
        sem[win][sel] = Sem.ROAD
        patches.append({"xy": [round(cx, 2), round(cy, 2)], "length_m": round(pl, 2), "width_m": round(pw, 2),
                        "yaw_rad": round(yaw, 4)})
    zone = _construction_zone(world, sem, albedo, height, rng, ego) if share > 0 else None
    return {"share": float(share), "segments_total": n_total, "segments_changed": int(k), **counts,
            "segments": changed, "new_asphalt": patches, "construction_zone": zone}


def _nearest_edge(roads, x: float, y: float):
    """(edge, arc length along it, tangent yaw) of the road centreline nearest to (x, y)."""
    best = (np.inf, 0, 0.0, 0.0)
    for e in range(roads.num_edges):
        p = roads.edge_points[e].astype(float)
        a, d = p[:-1], np.diff(p, axis=0)
        L = np.hypot(d[:, 0], d[:, 1])
        t = np.clip(((x - a[:, 0]) * d[:, 0] + (y - a[:, 1]) * d[:, 1]) / np.maximum(L ** 2, 1e-9), 0, 1)
        dist = np.hypot(a[:, 0] + t * d[:, 0] - x, a[:, 1] + t * d[:, 1] - y)
        i = int(np.argmin(dist))
        if dist[i] < best[0]:
            best = (dist[i], e, float(np.concatenate([[0.0], np.cumsum(L)])[i] + t[i] * L[i]),
                    math.atan2(d[i][1], d[i][0]))
    return best[1], best[2], best[3]


def _construction_zone(world, sem, albedo, height, rng, ego) -> Dict | None:
    roads = world.roads
    lengths = np.array([roads.length(e) for e in range(roads.num_edges)])
    if ego is not None:
        t_c = float(rng.uniform(0.3, 0.7)) * float(ego.t[-1])
        st = ego.at(t_c)
        e, s_c, tan_yaw = _nearest_edge(roads, float(st.x), float(st.y))
        side = 1.0 if math.cos(float(st.yaw) - tan_yaw) > 0 else -1.0  # +1: the ego drives along the edge
    else:
        e = int(rng.choice(roads.num_edges, p=lengths / lengths.sum()))
        s_c, side = float(rng.uniform(0.3, 0.7)) * lengths[e], float(rng.choice([-1.0, 1.0]))
    L_e = lengths[e]
    Lz = float(min(rng.uniform(50.0, 100.0), max(L_e - 20.0, 10.0)))
    s0 = float(np.clip(s_c - Lz / 2, min(10.0, L_e / 4), max(L_e - 10.0 - Lz, min(10.0, L_e / 4))))
    hw = float(roads.edge_width[e]) / 2
    per_dir = max(int(roads.edge_lanes[e]) // 2, 1)
    lane_off = (per_dir - 0.5) * hw / per_dir
    cone_off = float(min(max(hw - 0.6, lane_off + 1.3), hw - 0.15))
    shift = float(rng.uniform(0.8, 1.2))
    shape = sem.shape
    cones = 0
    for (x, y, yaw, s) in _stations(roads, e, 1.0, s0):
        if s > s0 + Lz:
            break
        nx, ny = math.sin(yaw), -math.cos(yaw)  # right of the edge's direction
        k = s - s0
        # worn asphalt between the cones and the kerb, the centre line replaced by a shifted temporary one
        b = _box(shape, world, x, y, 0.55, hw, yaw)
        if b is not None:
            win, m, u, v, *_ = b
            right = -v * side  # metres towards the closed kerb
            wa = m & (right > cone_off - 0.1) & np.isin(sem[win], _CARRIAGEWAY) & (height[win] < 0.05)
            albedo[win][wa] = (66, 64, 60)
            sem[win][wa] = Sem.ROAD
            cl = m & (np.abs(v) < 0.9) & np.isin(sem[win], _PAINT)
            albedo[win][cl] = (74, 74, 77)
            sem[win][cl] = Sem.ROAD
            tl = m & (np.abs(right + shift) < 0.2) & np.isin(sem[win], _CARRIAGEWAY) & (height[win] < 0.05)
            albedo[win][tl] = _TEMP_LINE_RGB
            sem[win][tl] = Sem.MARKING_YELLOW
        if int(round(k)) % 4 == 0:
            taper = min(k / 12.0, 1.0)  # the first cones lead in from the kerb
            off = side * (hw - 0.2 - (hw - 0.2 - cone_off) * taper)
            b = _box(shape, world, x + off * nx, y + off * ny, 0.26, 0.26, yaw)
            if b is not None:
                win, m, *_ = b
                free = m & (height[win] < 0.05)
                height[win][free] = 0.75
                sem[win][free] = Sem.DIRT
                albedo[win][free] = _CONE_RGB
                cones += int(free.any())
    mid = _stations(roads, e, 1.0, min(s0 + Lz / 2, 0.5 * L_e)) or _stations(roads, e, 1.0, 0.0)
    x, y = mid[0][0], mid[0][1]
    return {"edge": int(e), "xy": [round(x, 2), round(y, 2)], "length_m": round(Lz, 2), "cones": cones,
            "cone_offset_m": round(cone_off, 2), "lane_shift_m": round(shift, 3),
            "side": "along" if side > 0 else "against"}

"""Routes on the road graph: a random walk over ``world.roads`` in the right-hand lane, corners as
Bezier arcs clear of the inner kerb, smoothed to a dense polyline (``Route``, ``plan_route``), and the
polyline helpers it is built with (also used by ``sim.trajectory``'s speed profile)."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ..core.errors import InvalidArgument

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# polyline helpers


def _cumlen(pts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.hypot(v[..., 0], v[..., 1])
    return v / np.maximum(n, 1e-12)[..., None]


def _right(d: np.ndarray) -> np.ndarray:
    """Right-hand normal of direction(s) d (x east, y north)."""
    return np.stack([d[..., 1], -d[..., 0]], axis=-1)


def _point_at(pts: np.ndarray, cum: np.ndarray, s: float) -> Tuple[np.ndarray, np.ndarray]:
    """Point and unit direction at arc length ``s``; extrapolates straight beyond the ends."""
    k = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(pts) - 2))
    d = _unit(pts[k + 1] - pts[k])
    return pts[k] + (s - cum[k]) * d, d


def _slice(pts: np.ndarray, cum: np.ndarray, s0: float, s1: float) -> np.ndarray:
    """Sub-polyline between arc lengths s0 < s1 (endpoints interpolated or extrapolated)."""
    inner = pts[(cum > s0) & (cum < s1)]
    return np.vstack([_point_at(pts, cum, s0)[0][None], inner, _point_at(pts, cum, s1)[0][None]])


def _chaikin(pts: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Corner cutting that keeps both endpoints (smooths the kinks of curved road polylines)."""
    for _ in range(iterations):
        if len(pts) < 3:
            return pts
        a, b = pts[:-1], pts[1:]
        q, r = 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b
        mid = np.stack([q, r], axis=1).reshape(-1, 2)[1:-1]
        pts = np.vstack([pts[:1], mid, pts[-1:]])
    return pts


def _offset(pts: np.ndarray, d: float) -> np.ndarray:
    """Polyline shifted ``d`` metres to its right (mitred vertex normals)."""
    seg = _unit(np.diff(pts, axis=0))
    nrm = _right(seg)
    vn = np.vstack([nrm[:1], nrm[:-1] + nrm[1:], nrm[-1:]])
    vn = _unit(vn)
    cos_half = np.einsum("ij,ij->i", vn, np.vstack([nrm[:1], nrm]))
    return pts + d * vn / np.clip(cos_half, 0.5, None)[:, None]


def _bezier(p0, p1, p2, p3, spacing: float = 0.25) -> np.ndarray:
    n = max(int(np.ceil((np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1) + np.linalg.norm(p3 - p2)) / spacing)),
            4)
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t * t * p2 + (t ** 3) * p3


def _gauss_kernel(sigma_samples: float) -> np.ndarray:
    r = max(int(np.ceil(4 * sigma_samples)), 1)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_samples) ** 2)
    return k / k.sum()


def _smooth(a: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 with point-reflected ends (keeps end values and slopes)."""
    if sigma_samples <= 0 or len(a) < 3:
        return a.copy()
    k = _gauss_kernel(sigma_samples)
    r = len(k) // 2
    r_eff = min(r, len(a) - 1)
    head = 2 * a[:1] - a[1:r_eff + 1][::-1]
    tail = 2 * a[-1:] - a[-r_eff - 1:-1][::-1]
    if r_eff < r:  # very short input: pad with the end values
        head = np.concatenate([np.repeat(head[:1], r - r_eff, axis=0), head])
        tail = np.concatenate([tail, np.repeat(tail[-1:], r - r_eff, axis=0)])
    ext = np.concatenate([head, a, tail])
    if a.ndim == 1:
        return np.convolve(ext, k, mode="valid")
    return np.stack([np.convolve(ext[:, j], k, mode="valid") for j in range(a.shape[1])], axis=1)


def _max_filter(a: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return a.copy()
    pad = np.pad(a, radius, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(pad, 2 * radius + 1).max(axis=1)


def _resample(pts: np.ndarray, spacing: float) -> Tuple[np.ndarray, np.ndarray]:
    """Uniform-arc-length resampling. Returns (points, source arc length of each output point)."""
    keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > 1e-9])
    pts = pts[keep]
    cum = _cumlen(pts)
    s = np.arange(0.0, cum[-1] + 1e-9, spacing)
    return np.stack([np.interp(s, cum, pts[:, 0]), np.interp(s, cum, pts[:, 1])], axis=1), s


# ---------------------------------------------------------------------------------------
# route


@dataclass
class Route:
    """A path to drive: a dense polyline in the right-hand lane with smoothed corners.

    ``xy[i]`` is at arc length ``s[i]`` (uniform ``spacing_m``); ``heading`` is the unwrapped
    tangent direction (rad, CCW from east), ``curvature`` its derivative (1/m, left positive).
    ``steps`` lists the road edges in driving order as (edge, from_node); ``step_of[i]`` is the
    step that sample i belongs to (a junction belongs to the step that enters it).
    """

    xy: np.ndarray
    s: np.ndarray
    heading: np.ndarray
    curvature: np.ndarray
    steps: List[Tuple[int, int]]
    step_of: np.ndarray
    lane_offset_m: np.ndarray  # [len(steps)] distance of the lane centre right of the road centreline
    spacing_m: float

    @property
    def length(self) -> float:
        return float(self.s[-1])

    def at(self, s) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, heading) at arc length(s) ``s`` (heading unwrapped)."""
        s = np.asarray(s, float)
        return (np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1]),
                np.interp(s, self.s, self.heading))


def lane_offset(width_m: float, lanes: int) -> float:
    """Distance right of the centreline of the outermost lane in the driving direction."""
    per_dir = max(int(lanes) // 2, 1)
    lane_w = float(width_m) / (2 * per_dir)
    return (per_dir - 0.5) * lane_w


def _walk(roads, rng: np.random.Generator, length_m: float) -> Tuple[List[Tuple[int, int]], float]:
    """Random walk on the road graph: list of (edge, from_node), and the start arc length."""
    lengths = np.array([roads.length(e) for e in range(roads.num_edges)])
    e0 = int(rng.choice(roads.num_edges, p=lengths / lengths.sum()))
    u, v = (int(n) for n in roads.edge_uv[e0])
    # head away from a dead end when the other way is not one
    if roads.degree(v) == 1 and roads.degree(u) > 1:
        start = v
    elif roads.degree(u) == 1 and roads.degree(v) > 1:
        start = u
    else:
        start = u if rng.random() < 0.5 else v
    s0 = float(rng.uniform(0.1, 0.5)) * lengths[e0]
    steps = [(e0, start)]
    total = lengths[e0] - s0
    edge, node = e0, roads.other_end(e0, start)
    while total - 0.5 * lengths[edge] < length_m:  # the route ends half-way along its last edge
        cands = [e for e in roads.edges_at(node) if e != edge]
        if cands:
            # avoid edges that lead into a dead end when there is a choice
            open_ = [e for e in cands if roads.degree(roads.other_end(e, node)) > 1]
            pool = open_ or cands
            nxt = int(pool[int(rng.integers(len(pool)))])
        else:
            nxt = edge  # dead end: U-turn
        steps.append((nxt, node))
        total += lengths[nxt]
        edge, node = nxt, roads.other_end(nxt, node)
    return steps, s0


def _line_intersection(p, d, q, e) -> Optional[Tuple[float, float]]:
    """Parameters (a, b) with p + a d = q + b e, or None when (nearly) parallel."""
    den = d[0] * (-e[1]) - d[1] * (-e[0])
    if abs(den) < 1e-9:
        return None
    rhs = q - p
    a = (rhs[0] * (-e[1]) - rhs[1] * (-e[0])) / den
    b = (d[0] * rhs[1] - d[1] * rhs[0]) / den
    return a, b


def _junction(node_xy, O_in, c_in, w_in, off_in, O_out, c_out, w_out, off_out, world, *, r_max: float,
              r_min: float, margin: float) -> Tuple[float, np.ndarray, float]:
    """Smooth connector between two lane polylines meeting at a node.

    Returns (arc length where the incoming lane is left, connector points, arc length where the
    outgoing lane is joined). The corner radius is the largest (<= r_max) that keeps the
    connector ``margin`` metres from the inner kerb corner, assuming straight kerbs.
    """
    L_in, L_out = c_in[-1], c_out[-1]
    E_in, E_out = O_in[-1], O_out[0]
    d_in = _unit(O_in[-1] - O_in[-2])
    d_out = _unit(O_out[1] - O_out[0])
    cross = d_in[0] * d_out[1] - d_in[1] * d_out[0]
    theta = math.atan2(cross, float(d_in @ d_out))  # signed turn, left positive
    node_xy = np.asarray(node_xy, float)
    if abs(theta) > math.radians(165.0):  # U-turn (dead end): half circle around the node
        r = 0.5 * float(np.linalg.norm(E_out - E_in))
        back = 0.0
        while back < 0.45 * min(L_in, L_out):
            apex = node_xy - d_in * back + d_in * r
            if bool(world.contains(apex[0], apex[1], margin_m=1.0)):
                break
            back += 0.5
        s_end, s_start = L_in - back, back
        p0, t0 = _point_at(O_in, c_in, s_end)
        p3, t3 = _point_at(O_out, c_out, s_start)
        h = 4.0 / 3.0 * r
        return s_end, _bezier(p0, p0 + t0 * h, p3 - t3 * h, p3), s_start
    ab = _line_intersection(E_in, d_in, E_out, d_out) if abs(theta) > math.radians(3.0) else None
    if ab is None:  # (nearly) straight on: blend over a few metres
        t = min(3.0, 0.3 * L_in, 0.3 * L_out)
        s_end, s_start = L_in - t, t
        p0, t0 = _point_at(O_in, c_in, s_end)
        p3, t3 = _point_at(O_out, c_out, s_start)
        h = float(np.linalg.norm(p3 - p0)) / 3.0
        return s_end, _bezier(p0, p0 + t0 * h, p3 - t3 * h, p3), s_start
    a, b = ab
    corner = E_in + a * d_in
    side = 1.0 if theta < 0 else -1.0  # inner kerb: right for right turns, left for left turns
    kab = _line_intersection(node_xy + side * _right(d_in) * w_in / 2, d_in,
                             node_xy + side * _right(d_out) * w_out / 2, d_out)
    half = abs(theta) / 2.0
    sec_m1 = 1.0 / math.cos(half) - 1.0
    if kab is not None:
        kerb = node_xy + side * _right(d_in) * w_in / 2 + kab[0] * d_in
        cut = float(np.linalg.norm(kerb - corner)) - margin
        r = r_max if sec_m1 < 1e-9 else float(np.clip(cut / sec_m1, r_min, r_max))
    else:
        r = r_max
    t = r * math.tan(half)
    t = max(min(t, a + 0.45 * L_in, 0.45 * L_out - b), 0.5)
    r = t / math.tan(half)
    s_end, s_start = L_in + a - t, b + t
    p0, t0 = _point_at(O_in, c_in, s_end)
    p3, t3 = _point_at(O_out, c_out, s_start)
    h = 4.0 / 3.0 * math.tan(abs(theta) / 4.0) * r
    return s_end, _bezier(p0, p0 + t0 * h, p3 - t3 * h, p3), s_start


def plan_route(world, rng: np.random.Generator, length_m: float, *, spacing_m: float = 0.1,
               turn_radius_max_m: float = 15.0, turn_radius_min_m: float = 2.5, kerb_margin_m: float = 1.2,
               smooth_sigma_m: float = 1.0) -> Route:
    """Random drive of at least ``length_m`` metres along ``world.roads`` in the right-hand lane.

    Start on a random edge (length-weighted) 10-50 % along it and end half-way along the last
    edge (so neither end sits on a node at the world's rim); at each
    junction pick a random next edge, never the one just driven unless it is a dead end (then
    U-turn), and avoid edges into dead ends when there is a choice. The lane is the outermost
    one in the driving direction (``lane_offset``). Corners are cubic Bezier arcs whose radius
    keeps the path clear of the inner kerb, then the whole path is Gaussian-smoothed
    (``smooth_sigma_m``) so heading is continuous. Stays inside the world square.
    """
    roads = world.roads
    if roads.num_edges == 0:
        raise InvalidArgument("the world has no roads to drive on; generate it with `geoloc sim world`")
    if not (math.isfinite(length_m) and length_m > 0):
        raise InvalidArgument(f"route length must be positive, got {length_m}")
    target = 1.1 * length_m + 50.0  # corners and lane offsets make the lane path shorter than the centrelines
    while True:
        steps, s0 = _walk(roads, rng, target)
        route = _build_route(world, steps, s0, spacing_m=spacing_m, turn_radius_max_m=turn_radius_max_m,
                             turn_radius_min_m=turn_radius_min_m, kerb_margin_m=kerb_margin_m,
                             smooth_sigma_m=smooth_sigma_m)
        if route.length >= length_m:
            return route
        target *= 1.25


def _build_route(world, steps: List[Tuple[int, int]], s0: float, *, spacing_m: float, turn_radius_max_m: float,
                 turn_radius_min_m: float, kerb_margin_m: float, smooth_sigma_m: float) -> Route:
    """Lane polyline of a walk (see ``plan_route``)."""
    roads = world.roads
    lanes_xy, lanes_cum, offs, widths = [], [], [], []
    for e, frm in steps:
        centre = _chaikin(roads.polyline_from(e, frm).astype(float))
        off = lane_offset(roads.edge_width[e], roads.edge_lanes[e])
        lane = _offset(centre, off)
        lanes_xy.append(lane)
        lanes_cum.append(_cumlen(lane))
        offs.append(off)
        widths.append(float(roads.edge_width[e]))

    starts = [s0 * lanes_cum[0][-1] / max(roads.length(steps[0][0]), 1e-9)]
    ends: List[float] = []
    connectors: List[np.ndarray] = []
    for k in range(len(steps) - 1):
        node = roads.other_end(*steps[k])
        s_end, conn, s_start = _junction(roads.nodes[node], lanes_xy[k], lanes_cum[k], widths[k], offs[k],
                                         lanes_xy[k + 1], lanes_cum[k + 1], widths[k + 1], offs[k + 1], world,
                                         r_max=turn_radius_max_m, r_min=turn_radius_min_m, margin=kerb_margin_m)
        ends.append(s_end)
        connectors.append(conn)
        starts.append(s_start)
    ends.append(max(0.5 * lanes_cum[-1][-1], starts[-1] + 1.0))  # end mid-edge, away from the world's rim

    pieces, labels = [], []
    for k in range(len(steps)):
        a, b = starts[k], ends[k]
        if b - a > 1e-6:
            seg = _slice(lanes_xy[k], lanes_cum[k], a, b)
            pieces.append(seg)
            labels.append(np.full(len(seg), k))
        if k < len(connectors):
            pieces.append(connectors[k][1:-1])
            labels.append(np.full(len(connectors[k]) - 2, k))
    raw = np.vstack(pieces)
    raw_lab = np.concatenate(labels)
    raw_cum = _cumlen(raw)

    fine = min(0.25, spacing_m)
    pts, s_src = _resample(raw, fine)
    pts = _smooth(pts, smooth_sigma_m / fine)
    xy, s_fine = _resample(pts, spacing_m)
    # step label of each output sample: through the fine samples back to the raw polyline
    fine_idx = np.clip(np.searchsorted(_cumlen(pts), s_fine), 0, len(pts) - 1)
    raw_idx = np.clip(np.searchsorted(raw_cum, s_src[fine_idx]), 0, len(raw) - 1)
    step_of = raw_lab[raw_idx]

    d = np.gradient(xy, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    s = np.arange(len(xy)) * spacing_m
    curvature = _smooth(np.gradient(heading, spacing_m), smooth_sigma_m / spacing_m)
    inside = world.contains(xy[:, 0], xy[:, 1])
    if not np.all(inside):
        log.warning("route leaves the world square at %d of %d samples", int((~inside).sum()), len(xy))
    return Route(xy=xy, s=s, heading=heading, curvature=curvature, steps=steps, step_of=step_of,
                 lane_offset_m=np.array(offs), spacing_m=float(spacing_m))

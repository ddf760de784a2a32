"""Moving traffic for the camera renderer (``Conditions.traffic``): vehicles on the road network.

Vehicle motion is simulated once, up front, over the drive (numpy, ``dt`` = 0.2 s), and read back
per frame by linear interpolation (``Traffic.at``). Three kinds of vehicle:

* ``lead``: in the ego car's own lane, 10-40 m ahead (a smooth random gap), on the ego's path;
* ``oncoming``: in the opposite lane of the ego's path, driving towards it at 6-12 m/s; each one
  meets the ego car once per cycle (``ONCOMING_PERIOD_S``), the cycles spread over the drive;
* ``network``: random walks on ``world.roads`` in their lane (right-hand traffic, any lane of their
  direction), desired speed 4-14 m/s, slowing to 3-5 m/s through junctions (degree >= 3) and
  queueing behind the vehicle ahead in their lane (the ego car and the lead / oncoming ones
  included): time headway 1.2 s, 2 m standstill gap. They start on edges near the ego's path.

Without an ego trajectory only network vehicles exist (over ``DEFAULT_HORIZON_S``). Network
vehicles that would overlap the ego car or a lead / oncoming vehicle are hidden for that frame
(the ego trajectory is fixed and does not react to them).

``stamp`` paints the nearby vehicles into the renderer's own height / semantic / albedo / shadow
rasters for one frame (boxes with a cabin, shadows swept away from the drive's sun) and returns
what ``restore`` puts back; the world's rasters are never written.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from .world import Sem

DEFAULT_HORIZON_S = 120.0
ONCOMING_PERIOD_S = 24.0
DT = 0.2
STAMP_RANGE_M = 150.0
# body kinds: (name, probability, length (m), width (m), height (m))
BODIES = (("car", 0.78, 4.4, 1.8, 1.45), ("van", 0.16, 5.2, 2.0, 2.1), ("bus", 0.06, 11.0, 2.5, 3.1))
COLOURS = np.array([(200, 200, 205), (30, 30, 35), (150, 20, 25), (40, 60, 130), (170, 170, 175),
                    (235, 235, 235), (90, 95, 100), (20, 70, 45), (210, 170, 40)], np.uint8)
_GROUND_OK = (Sem.ROAD, Sem.MARKING, Sem.MARKING_YELLOW, Sem.PARKING, Sem.SIDEWALK, Sem.GRASS, Sem.DIRT)


def _cumlen(p: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(p, axis=0).T))])


def _offset_right(pts: np.ndarray, d: float) -> np.ndarray:
    """Polyline moved ``d`` metres to the right of its direction (vertex normals, averaged)."""
    t = np.gradient(pts, axis=0)
    t /= np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)[:, None]
    return pts + d * np.stack([t[:, 1], -t[:, 0]], axis=1)


def _lane_offsets(width: float, lanes: int) -> List[float]:
    """Distances right of the centreline of the lanes of one direction (right-hand traffic)."""
    per_dir = max(int(lanes) // 2, 1)
    lane_w = float(width) / (2 * per_dir)
    return [(k + 0.5) * lane_w for k in range(per_dir)]


class _Paths:
    """Many polylines, interpolated at one arc length each in one vectorised call."""

    def __init__(self, paths: List[np.ndarray]):
        self.n = len(paths)
        cums = [_cumlen(p) for p in paths]
        self.length = np.array([c[-1] for c in cums])
        self.big = float(self.length.max() + 10.0) if paths else 1.0
        self.key = np.concatenate([c + i * self.big for i, c in enumerate(cums)]) if paths else np.zeros(0)
        self.xy = np.vstack(paths) if paths else np.zeros((0, 2))
        self.start = np.cumsum([0] + [len(p) for p in paths])[:-1]

    def at(self, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(xy [N, 2], heading [N]) of path i at arc length s[i] (clamped to the path)."""
        s = np.clip(s, 0.0, self.length - 1e-6)
        q = s + np.arange(self.n) * self.big
        j = np.searchsorted(self.key, q, side="right") - 1
        j = np.clip(j, self.start, self.start + np.diff(np.append(self.start, len(self.key))) - 2)
        f = ((q - self.key[j]) / np.maximum(self.key[j + 1] - self.key[j], 1e-9))[:, None]
        d = self.xy[j + 1] - self.xy[j]
        return self.xy[j] + f * d, np.arctan2(d[:, 1], d[:, 0])


class Traffic:
    """Vehicle states over the drive; see the module docstring."""

    def __init__(self, world, n: int, rng: np.random.Generator, ego=None):
        self.n = int(n)
        roads = world.roads
        horizon = float(ego.t[-1]) + 1.0 if ego is not None else DEFAULT_HORIZON_S
        self.t = np.arange(0.0, horizon + DT, DT)
        T = len(self.t)
        n_lead = 0 if ego is None or n == 0 else (2 if n >= 20 else 1)
        n_on = 0 if ego is None else min(n - n_lead, max(1, int(round(0.2 * n))))
        n_net = n - n_lead - n_on
        self.kind = ["lead"] * n_lead + ["oncoming"] * n_on + ["network"] * n_net
        body_p = np.array([b[1] for b in BODIES])
        self.body = [BODIES[int(rng.choice(len(BODIES), p=body_p / body_p.sum()))] for _ in range(n)]
        self.colour = COLOURS[rng.integers(0, len(COLOURS), n)] if n else np.zeros((0, 3), np.uint8)
        self.half_len = np.array([b[2] / 2 for b in self.body])
        self.half_wid = np.array([b[3] / 2 for b in self.body])
        self.height = np.array([b[4] for b in self.body])
        self.x = np.zeros((n, T))
        self.y = np.zeros((n, T))
        self.yaw = np.zeros((n, T))
        self.speed_des = np.zeros(n)
        self._ego = ego
        if ego is not None and n:
            self._simulate_ego_relative(world, rng, n_lead, n_on)
        if n_net:
            self._simulate_network(world, roads, rng, n_lead + n_on, n_net)

    # ---- ego-relative vehicles ------------------------------------------------------------
    def _ego_path(self, world):
        """The ego's path by arc length (extended 300 m straight on) and the opposite lane's offset."""
        ego = self._ego
        s = np.asarray(ego.s, float)
        keep = np.concatenate([[True], np.diff(s) > 1e-3])
        s, x, y, yaw = s[keep], np.asarray(ego.x)[keep], np.asarray(ego.y)[keep], np.asarray(ego.yaw)[keep]
        ext = np.arange(1.0, 301.0, 1.0)
        s = np.concatenate([s, s[-1] + ext])
        x = np.concatenate([x, x[-1] + ext * math.cos(yaw[-1])])
        y = np.concatenate([y, y[-1] + ext * math.sin(yaw[-1])])
        yaw = np.concatenate([yaw, np.full(len(ext), yaw[-1])])
        # the opposite lane: 2 x the lane offset of the nearest road edge, to the left
        sub = np.arange(0, len(s), max(1, len(s) // 400))
        off = np.full(len(sub), 2 * 2.5)
        best = np.full(len(sub), np.inf)
        roads = world.roads
        for e in range(roads.num_edges):
            p = roads.edge_points[e]
            a, d = p[:-1], np.diff(p, axis=0)
            L2 = np.maximum((d ** 2).sum(1), 1e-9)
            px, py = x[sub][:, None] - a[None, :, 0], y[sub][:, None] - a[None, :, 1]
            tt = np.clip((px * d[None, :, 0] + py * d[None, :, 1]) / L2[None], 0, 1)
            dist = np.hypot(px - tt * d[None, :, 0], py - tt * d[None, :, 1]).min(axis=1)
            better = dist < best
            best[better] = dist[better]
            off[better] = 2 * _lane_offsets(roads.edge_width[e], roads.edge_lanes[e])[-1]
        off_s = np.interp(s, s[sub], off)
        return s, x, y, yaw, off_s

    def _simulate_ego_relative(self, world, rng, n_lead: int, n_on: int) -> None:
        s_p, x_p, y_p, yaw_p, off_p = self._ego_path(world)
        yaw_p = np.unwrap(yaw_p)
        ego_s = np.interp(self.t, np.asarray(self._ego.t), np.asarray(self._ego.s))
        base_gap = None
        for i in range(n_lead):
            if base_gap is None:  # a smooth random gap in 10-40 m: two sines of random period and phase
                p1, p2 = rng.uniform(25.0, 60.0), rng.uniform(9.0, 20.0)
                f1, f2 = rng.uniform(0, 2 * math.pi, 2)
                w = 2 * math.pi * self.t
                base_gap = 25.0 + 10.0 * np.sin(w / p1 + f1) + 4.0 * np.sin(w / p2 + f2)
                gap = base_gap
            else:  # the second one drives ahead of the first
                gap = base_gap + rng.uniform(9.0, 15.0)
            s = ego_s + gap
            self._set(i, np.interp(s, s_p, x_p), np.interp(s, s_p, y_p), np.interp(s, s_p, yaw_p))
            self.speed_des[i] = float(np.mean(np.gradient(s, self.t))) if len(self.t) > 1 else 0.0
        phases = (np.arange(n_on) + rng.uniform(0.2, 0.8, n_on)) * ONCOMING_PERIOD_S / max(n_on, 1)
        for k in range(n_on):
            i = n_lead + k
            v = float(rng.uniform(6.0, 12.0))
            m = np.round((self.t - phases[k]) / ONCOMING_PERIOD_S)
            t_meet = phases[k] + m * ONCOMING_PERIOD_S
            # the ego's arc length at the meeting (beyond the drive: straight on at 10 m/s, before it: at 0)
            s_meet = np.interp(t_meet, self.t, ego_s) + 10.0 * np.clip(t_meet - self.t[-1], 0.0, None)
            s = s_meet + v * (t_meet - self.t)
            yaw = np.interp(s, s_p, yaw_p)
            off = np.interp(s, s_p, off_p)
            # left of the ego's direction of travel, heading the other way
            self._set(i, np.interp(s, s_p, x_p) - off * np.sin(yaw), np.interp(s, s_p, y_p) + off * np.cos(yaw),
                      yaw + math.pi)
            self.speed_des[i] = v

    def _set(self, i, x, y, yaw):
        self.x[i], self.y[i], self.yaw[i] = x, y, yaw

    # ---- network vehicles -----------------------------------------------------------------
    def _simulate_network(self, world, roads, rng, i0: int, n_net: int) -> None:
        lengths = np.array([roads.length(e) for e in range(roads.num_edges)])
        w = lengths.copy()
        if self._ego is not None:  # start near the ego's path: there they are seen
            ex, ey = np.asarray(self._ego.x)[::50], np.asarray(self._ego.y)[::50]
            for e in range(roads.num_edges):
                p = roads.edge_points[e]
                d = np.hypot(p[:, None, 0] - ex[None], p[:, None, 1] - ey[None]).min()
                if d < 250.0:
                    w[e] *= 25.0
        need = 14.0 * (self.t[-1] + 5.0) + 50.0
        paths, junctions = [], []
        for _ in range(n_net):
            e = int(rng.choice(roads.num_edges, p=w / w.sum()))
            node = int(roads.edge_uv[e][0] if rng.random() < 0.5 else roads.edge_uv[e][1])
            lane_k = None
            pieces, jun, total = [], [], 0.0
            while total < need:
                offs = _lane_offsets(roads.edge_width[e], roads.edge_lanes[e])
                if lane_k is None:
                    lane_k = int(rng.integers(len(offs)))
                lane = _offset_right(roads.polyline_from(e, node).astype(float), offs[min(lane_k, len(offs) - 1)])
                pieces.append(lane)
                total += float(_cumlen(lane)[-1])
                nxt_node = roads.other_end(e, node)
                cands = [c for c in roads.edges_at(nxt_node) if c != e] or [e]
                if roads.degree(nxt_node) >= 3:
                    jun.append(len(pieces))  # the junction after piece k
                e, node = int(cands[int(rng.integers(len(cands)))]), nxt_node
            path = np.vstack(pieces)
            keep = np.concatenate([[True], np.hypot(*np.diff(path, axis=0).T) > 1e-6])
            ends = np.cumsum([len(p) for p in pieces]) - 1
            cum = _cumlen(path)  # zero-length steps add nothing: the same arc as the de-duplicated path
            paths.append(path[keep])
            junctions.append([cum[ends[k - 1]] for k in jun])
        P = _Paths(paths)
        J = np.full((n_net, max(1, max(len(j) for j in junctions))), np.inf)
        for k, j in enumerate(junctions):
            J[k, :len(j)] = j
        s = rng.uniform(0.0, 0.6, n_net) * np.minimum(P.length, 150.0)
        v_des = rng.uniform(4.0, 14.0, n_net)
        v_j = rng.uniform(3.0, 5.0, n_net)
        v = v_des.copy()
        self.speed_des[i0:] = v_des
        hl = self.half_len[i0:]
        for k, t in enumerate(self.t):
            xy, hd = P.at(s)
            self.x[i0:, k], self.y[i0:, k], self.yaw[i0:, k] = xy[:, 0], xy[:, 1], hd
            # junction slowing: braking distance to the next junction, and through it (+-6 m)
            d_next = np.min(np.where(J + 6.0 > s[:, None], J - s[:, None], np.inf), axis=1)
            v_lim = np.sqrt(v_j ** 2 + 2 * 1.5 * np.clip(d_next, 0.0, None))
            # queueing: nearest vehicle ahead in the same lane (ego, lead / oncoming, network)
            ox, oy, oyaw, ohl = self._others(k, i0)
            ox, oy = np.concatenate([ox, xy[:, 0]]), np.concatenate([oy, xy[:, 1]])
            oyaw, ohl = np.concatenate([oyaw, hd]), np.concatenate([ohl, hl])
            c, sn = np.cos(hd)[:, None], np.sin(hd)[:, None]
            rx, ry = ox[None] - xy[:, 0:1], oy[None] - xy[:, 1:2]
            ahead, lat = rx * c + ry * sn, -rx * sn + ry * c
            same = (np.cos(oyaw[None] - hd[:, None]) > 0.7) & (np.abs(lat) < 1.6) & (ahead > 0.1)
            gap = np.min(np.where(same, ahead - ohl[None] - hl[:, None], np.inf), axis=1)
            v_f = np.clip((gap - 2.0) / 1.2, 0.0, None)
            target = np.minimum(np.minimum(v_des, v_lim), v_f)
            v = np.clip(target, np.maximum(v - 4.0 * DT, 0.0), v + 1.5 * DT)
            s = s + v * DT
        self.yaw[i0:] = np.unwrap(self.yaw[i0:], axis=1)

    def _others(self, k: int, i0: int):
        """Positions of the ego and the ego-relative vehicles at step k (the network ones queue behind)."""
        xs, ys, yaws, hls = [], [], [], []
        if self._ego is not None:
            st = self._ego.at(self.t[k])
            xs.append(float(st.x)), ys.append(float(st.y)), yaws.append(float(st.yaw)), hls.append(2.3)
        for i in range(i0):
            xs.append(self.x[i, k]), ys.append(self.y[i, k]), yaws.append(self.yaw[i, k]), hls.append(self.half_len[i])
        return np.array(xs), np.array(ys), np.array(yaws), np.array(hls)

    # ---- per frame --------------------------------------------------------------------------
    def at(self, t: float, ego_pose: Tuple[float, float, float] | None = None):
        """(x, y, yaw, visible) of every vehicle at time ``t`` (s since the drive's start)."""
        t = float(np.clip(t, self.t[0], self.t[-1]))
        f = (t - self.t[0]) / DT
        k = min(int(f), len(self.t) - 2) if len(self.t) > 1 else 0
        a = f - k if len(self.t) > 1 else 0.0
        k1 = min(k + 1, len(self.t) - 1)
        x = self.x[:, k] * (1 - a) + self.x[:, k1] * a
        y = self.y[:, k] * (1 - a) + self.y[:, k1] * a
        yaw = self.yaw[:, k] * (1 - a) + self.yaw[:, k1] * a
        vis = np.ones(self.n, bool)
        net = np.array([kd == "network" for kd in self.kind], bool)
        if net.any():
            if ego_pose is not None:
                ex, ey, eyaw = ego_pose
                rx, ry = x - ex, y - ey
                ah, lt = rx * math.cos(eyaw) + ry * math.sin(eyaw), -rx * math.sin(eyaw) + ry * math.cos(eyaw)
                vis &= ~(net & (ah > -4.0 - self.half_len) & (ah < 4.0 + self.half_len) & (np.abs(lt) < 2.2))
            rel = ~net
            if rel.any():
                d = np.hypot(x[:, None] - x[rel][None], y[:, None] - y[rel][None])
                close = (d < (self.half_len[:, None] + self.half_len[rel][None] + 1.0)).any(axis=1)
                vis &= ~(net & close)
        return x, y, yaw, vis

    def realisation(self) -> Dict:
        out = []
        for i in range(self.n):
            out.append({"id": i, "kind": self.kind[i], "body": self.body[i][0],
                        "colour": [int(c) for c in self.colour[i]],
                        "length_m": self.body[i][2], "width_m": self.body[i][3], "height_m": self.body[i][4],
                        "speed_mps": round(float(self.speed_des[i]), 2),
                        "start_xy": [round(float(self.x[i, 0]), 2), round(float(self.y[i, 0]), 2)]})
        return {"vehicles": self.n, "lead": self.kind.count("lead"), "oncoming": self.kind.count("oncoming"),
                "network": self.kind.count("network"), "dt_s": DT, "list": out}


def stamp(r, traffic: Traffic, t: float, x: float, y: float, yaw: float, sun: np.ndarray | None):
    """Paint the vehicles near (x, y) at time ``t`` into the renderer ``r``'s rasters (height, sem,
    albedo, shadow); returns (saved patches for ``restore``, [(i, x, y, yaw)] of the stamped ones)."""
    vx, vy, vyaw, vis = traffic.at(t, (x, y, yaw))
    near = vis & (np.hypot(vx - x, vy - y) < STAMP_RANGE_M)
    near &= ((vx - x) * math.cos(yaw) + (vy - y) * math.sin(yaw)) > -20.0
    saved, placed = [], []
    w = r.world
    g = w.meta.gsd_m
    shape = r.height.shape
    shadow_len = None
    if sun is not None and sun[2] > 0.02:
        horiz = math.hypot(sun[0], sun[1])
        shadow_dir = (-sun[0] / max(horiz, 1e-9), -sun[1] / max(horiz, 1e-9))
        shadow_len = horiz / sun[2]  # metres of shadow per metre of height
    for i in np.nonzero(near)[0]:
        hl, hw, h = traffic.half_len[i], traffic.half_wid[i], traffic.height[i]
        reach = hl + (h * min(shadow_len, 40.0) if shadow_len else 0.0)
        r_c, c_c = w.xy_to_rc(vx[i], vy[i])
        rad = math.hypot(reach, hw) / g + 2
        r0, r1 = max(int(r_c - rad), 0), min(int(r_c + rad) + 1, shape[0])
        c0, c1 = max(int(c_c - rad), 0), min(int(c_c + rad) + 1, shape[1])
        if r0 >= r1 or c0 >= c1:
            continue
        win = (slice(r0, r1), slice(c0, c1))
        saved.append((win, r.height[win].copy(), r.sem[win].copy(), r.albedo[win].copy(), r.shadow[win].copy()))
        rr, cc = np.mgrid[r0:r1, c0:c1]
        px, py = (cc + 0.5 - c_c) * g, -(rr + 0.5 - r_c) * g
        c, s = math.cos(vyaw[i]), math.sin(vyaw[i])
        u, v = px * c + py * s, -px * s + py * c
        free = (r.height[win] < 0.05) & np.isin(r.sem[win], _GROUND_OK)
        body = free & (np.abs(u) <= hl) & (np.abs(v) <= hw)
        if shadow_len:
            # Minkowski sum of the footprint and the shadow segment: some lambda in [0, L] puts p - lambda d inside
            L = h * min(shadow_len, 40.0)
            du, dv = shadow_dir[0] * c + shadow_dir[1] * s, -shadow_dir[0] * s + shadow_dir[1] * c
            lo, hi = np.zeros_like(u), np.full_like(u, L)
            for q, dq, half in ((u, du, hl), (v, dv, hw)):
                if abs(dq) < 1e-9:
                    inside = np.abs(q) <= half
                    hi = np.where(inside, hi, -1.0)
                else:
                    a1, a2 = (q - half) / dq, (q + half) / dq
                    lo, hi = np.maximum(lo, np.minimum(a1, a2)), np.minimum(hi, np.maximum(a1, a2))
            r.shadow[win] |= (lo <= hi) & (r.height[win] < 0.05)
        if not body.any():
            continue
        # a cabin over the middle, bonnet and boot lower (buses and vans: one box)
        car = traffic.body[i][0] == "car"
        prof = np.where(car & (np.abs(u + 0.1 * hl) > 0.55 * hl), 0.95, h).astype(np.float32)
        r.height[win][body] = prof[body]
        r.sem[win][body] = Sem.CAR
        r.albedo[win][body] = traffic.colour[i]
        placed.append((int(i), float(vx[i]), float(vy[i]), float(vyaw[i])))
    return saved, placed


def restore(r, saved) -> None:
    """Undo ``stamp`` (in reverse order: windows may overlap)."""
    for win, h, sem, alb, sh in reversed(saved):
        r.height[win], r.sem[win], r.albedo[win], r.shadow[win] = h, sem, alb, sh

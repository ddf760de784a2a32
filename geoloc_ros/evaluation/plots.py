"""Pictures of a replay (matplotlib, Agg canvas; no pyplot state): trajectory over the orthophoto,
error over time with status bands, error CDF of raw GNSS vs baseline vs corrected."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import metrics as M

log = logging.getLogger(__name__)

COLORS = {"truth": "#111111", "raw": "#d62728", "baseline": "#1f77b4", "corrected": "#2ca02c"}
LABELS = {"truth": "truth", "raw": "raw GNSS", "baseline": "GNSS + odometry (no camera)",
          "corrected": "geoloc (camera + GNSS + odometry)"}
STATUS_COLORS = {"tracking": "#8fd18f", "degraded": "#f5c26b", "lost": "#e8706b", "initialising": "#c9c9c9",
                 "fix": "#8fd18f", "none": "#ffffff"}
FILES = {"trajectory": "trajectory.png", "error_time": "error_over_time.png", "error_cdf": "error_cdf.png",
         "metric": "camera_bev.png", "camera": "camera_integrity.png"}


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", facecolor="white")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------
# orthophoto


def ortho_sources(res) -> List[Path]:
    """GeoTIFFs that may hold the imagery under the drive: the world's orthophoto (synthetic
    drives), then the index's imagery (when it is a GeoTIFF that still exists)."""
    out: List[Path] = []
    if getattr(res, "world_dir", None):
        p = Path(res.world_dir) / "orthophoto.tif"
        if p.is_file():
            out.append(p)
    ipath = (getattr(res, "index_info", {}) or {}).get("path")
    if ipath:
        mf = Path(ipath) / "manifest.json"
        try:
            img = json.loads(mf.read_text()).get("imagery", {})
            p = Path(img.get("path", ""))
            if img.get("kind", "geotiff") != "xyz" and p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
                out.append(p)
        except (OSError, ValueError):
            pass
    return out


def read_ortho_crop(path: Path, frame, xmin: float, xmax: float, ymin: float, ymax: float,
                    max_px: int = 1600) -> Optional[Tuple[np.ndarray, Tuple[float, float, float, float]]]:
    """RGB crop of a GeoTIFF over map-frame bounds -> (image, extent for imshow), or None when the
    raster is in another CRS than the map frame or does not overlap."""
    import rasterio
    from rasterio.windows import from_bounds

    with rasterio.open(path) as src:
        if src.crs is None or src.crs.to_epsg() != int(frame.epsg) or src.count < 3:
            log.info("orthophoto %s is not in %s (or not RGB): plain axes", path, frame.crs)
            return None
        e0, n0 = frame.origin_e, frame.origin_n
        left, right = max(xmin + e0, src.bounds.left), min(xmax + e0, src.bounds.right)
        bottom, top = max(ymin + n0, src.bounds.bottom), min(ymax + n0, src.bounds.top)
        if right <= left or top <= bottom:
            return None
        win = from_bounds(left, bottom, right, top, transform=src.transform).round_offsets().round_lengths()
        scale = max(1.0, max(win.width, win.height) / max_px)
        shape = (3, max(1, int(win.height / scale)), max(1, int(win.width / scale)))
        arr = src.read([1, 2, 3], window=win, out_shape=shape)
        b = rasterio.windows.bounds(win, src.transform)
    img = np.moveaxis(arr, 0, -1)
    if img.dtype != np.uint8:
        img = np.clip(img.astype(float) / max(float(img.max()), 1.0) * 255.0, 0, 255).astype(np.uint8)
    return img, (b[0] - e0, b[2] - e0, b[1] - n0, b[3] - n0)


# ---------------------------------------------------------------------------------------
# pictures


def _stroke(lw=3.0):
    import matplotlib.patheffects as pe

    return [pe.Stroke(linewidth=lw, foreground="white", alpha=0.8), pe.Normal()]


def plot_trajectory(res, path: Path) -> Path:
    """Truth, raw GNSS, baseline and corrected over the orthophoto crop (map frame metres)."""
    tracks = res.tracks()
    xs = [tr.x for tr in tracks.values() if len(tr)]
    ys = [tr.y for tr in tracks.values() if len(tr)]
    if res.truth is not None and len(res.truth):
        xs.append(res.truth.x)
        ys.append(res.truth.y)
    allx, ally = np.concatenate(xs), np.concatenate(ys)
    ok = np.isfinite(allx) & np.isfinite(ally)
    allx, ally = allx[ok], ally[ok]
    # robust bounds (an outlier far away must not shrink the drive to a dot)
    lo_x, hi_x = np.percentile(allx, [0.5, 99.5])
    lo_y, hi_y = np.percentile(ally, [0.5, 99.5])
    span = max(hi_x - lo_x, hi_y - lo_y, 40.0)
    margin = 0.08 * span + 10.0
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    half_w = max(hi_x - lo_x, 40.0) / 2 + margin
    half_h = max(hi_y - lo_y, 40.0) / 2 + margin
    xmin, xmax, ymin, ymax = cx - half_w, cx + half_w, cy - half_h, cy + half_h
    aspect = (ymax - ymin) / (xmax - xmin)
    w = 9.0
    fig = _figure(w, min(max(w * aspect, 4.0), 14.0) + 0.8)
    ax = fig.add_subplot(1, 1, 1)
    bg = None
    for src in ortho_sources(res):
        try:
            bg = read_ortho_crop(src, res.frame, xmin, xmax, ymin, ymax)
        except Exception as exc:  # a broken raster must not lose the other outputs
            log.warning("could not read orthophoto %s: %s", src, exc)
        if bg is not None:
            break
    if bg is not None:
        img, extent = bg
        ax.imshow(img, extent=extent, origin="upper", interpolation="bilinear", alpha=0.85, zorder=0)
    else:
        ax.set_facecolor("#f4f4f4")
        ax.grid(True, color="white", lw=1.0)
    if res.truth is not None and len(res.truth):
        ax.plot(res.truth.x, res.truth.y, color=COLORS["truth"], lw=2.2, label=LABELS["truth"], zorder=3,
                path_effects=_stroke(4.5))
    raw = tracks["raw"]
    if len(raw):
        ax.scatter(raw.x, raw.y, s=14, color=COLORS["raw"], alpha=0.75, label=LABELS["raw"], zorder=2,
                   edgecolors="none")
    for name, style in (("corrected", dict(lw=1.8, zorder=3, path_effects=_stroke(3.4))),
                        ("baseline", dict(lw=1.2, ls=(0, (4, 3)), zorder=4))):  # dashed on top: both stay visible
        tr = tracks[name]
        if len(tr):
            ax.plot(tr.x, tr.y, color=COLORS[name], label=LABELS[name], **style)
    c = res.methods["corrected"]
    mk = np.asarray([k and u for k, u in zip(c.keyframe, c.match_used)], bool)
    if mk.any():
        ax.scatter(np.asarray(c.x)[mk], np.asarray(c.y)[mk], marker="o", s=22, facecolors="none",
                   edgecolors=COLORS["corrected"], linewidths=1.2, zorder=5, label="camera match used")
    start = (res.truth.x[0], res.truth.y[0]) if res.truth is not None and len(res.truth) else \
        (raw.x[0], raw.y[0]) if len(raw) else None
    if start is not None:
        ax.scatter([start[0]], [start[1]], marker="*", s=160, color="gold", edgecolors="black", zorder=6,
                   label="start")
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.set_xlabel(f"east (m, map frame {res.frame.crs})")
    ax.set_ylabel("north (m)")
    ax.set_title(_title(res, "trajectory"), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def _title(res, what: str) -> str:
    m = res.metrics.get("methods", {})
    parts = []
    for k in ("raw", "baseline", "corrected"):
        med = (m.get(k, {}).get("error_m") or {}).get("median")
        if med is not None:
            parts.append(f"{ {'raw': 'raw', 'baseline': 'baseline', 'corrected': 'geoloc'}[k] } {med:.1f} m")
    head = f"{res.run_name} - {what}"
    return head + ("\nmedian error: " + ", ".join(parts) if parts else "")


def _segments(t: np.ndarray, labels: np.ndarray):
    """Runs of equal labels on a regular grid -> [(label, start, end)]."""
    out = []
    if len(t) == 0:
        return out
    dt = t[1] - t[0] if len(t) > 1 else 0.1
    s = 0
    for i in range(1, len(t) + 1):
        if i == len(t) or labels[i] != labels[s]:
            out.append((labels[s], t[s], t[i - 1] + dt))
            s = i
    return out


def _labels_on_grid(tr: M.Track, grid: np.ndarray, max_age_s: float) -> np.ndarray:
    idx = M.latest_index(tr.t, grid, max_age_s)
    st = tr.status if tr.status is not None else np.full(len(tr), "fix", dtype=object)
    lab = np.array(["none"] * len(grid), dtype=object)
    lab[idx >= 0] = st[idx[idx >= 0]]
    return lab


def plot_error_time(res, path: Path) -> Path:
    """Horizontal error over time of the three methods; status strips above (corrected, baseline,
    raw GNSS availability) and the keyframes where a camera match was used."""
    from matplotlib.patches import Patch

    tracks = res.tracks()
    t0 = res.t_start
    max_age = float(res.metrics.get("max_age_s", 2.0))
    grid = M.time_grid(res.t_start, max(res.t_end, res.t_start + 0.1), 0.1)
    fig = _figure(11.0, 5.6)
    gs = fig.add_gridspec(2, 1, height_ratios=[1.0, 5.0], hspace=0.06)
    axs = fig.add_subplot(gs[0])
    ax = fig.add_subplot(gs[1], sharex=axs)
    rows = [("corrected", "geoloc"), ("baseline", "baseline"), ("raw", "GNSS")]
    seen = set()
    for r, (name, lab) in enumerate(rows):
        for st, a, b in _segments(grid - t0, _labels_on_grid(tracks[name], grid, max_age)):
            seen.add(st)
            axs.broken_barh([(a, b - a)], (len(rows) - 1 - r + 0.1, 0.8), facecolors=STATUS_COLORS.get(st, "#bbbbbb"),
                            edgecolor="none")
    c = res.methods["corrected"]
    kt = np.asarray([t for t, k, u in zip(c.t, c.keyframe, c.match_used) if k and u], float) - t0
    axs.set_yticks([len(rows) - 1 - r + 0.5 for r in range(len(rows))])
    axs.set_yticklabels([lab for _, lab in rows], fontsize=8)
    axs.set_ylim(0, len(rows))
    axs.tick_params(labelbottom=False)
    axs.set_title(_title(res, "error over time"), fontsize=10)
    handles = [Patch(facecolor=STATUS_COLORS[s], edgecolor="#888888", label=s)
               for s in ("tracking", "degraded", "lost", "initialising", "none") if s in seen or s == "tracking"]
    axs.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.1), fontsize=7, title="status",
               title_fontsize=7, frameon=False)
    ymax = 1.0
    for name, style in (("raw", dict(ls="none", marker=".", ms=5, alpha=0.7)), ("corrected", dict(lw=1.8)),
                        ("baseline", dict(lw=1.2, ls=(0, (4, 3))))):
        tr = tracks[name]
        if not len(tr):
            continue
        err, _, _ = M.horizontal_errors(tr, res.truth)
        err = np.where(tr.usable(), err, np.nan)
        if np.isfinite(err).any():
            ymax = max(ymax, float(np.nanpercentile(err, 99)))
        ax.plot(tr.t - t0, err, color=COLORS[name], label=LABELS[name], **style)
    if kt.size:
        ax.plot(kt, np.zeros_like(kt), ls="none", marker="|", ms=14, mew=2.0, color=COLORS["corrected"],
                label="camera match used", clip_on=False)
    for th in M.THRESHOLDS_M:
        if th < ymax * 1.2:
            ax.axhline(th, color="#999999", lw=0.7, ls=":")
    ax.set_ylim(0, ymax * 1.15)
    ax.set_xlim(0, max(res.t_end - t0, 0.1))
    ax.set_xlabel("time since the start of the bag (s)")
    ax.set_ylabel("horizontal error (m)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def plot_error_cdf(res, path: Path) -> Path:
    """Cumulative distribution of the horizontal error: raw GNSS vs baseline vs corrected."""
    tracks = res.tracks()
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    xmax = 1.0
    for name in ("raw", "corrected", "baseline"):  # baseline dashed on top: visible where the two agree
        tr = tracks[name]
        if not len(tr):
            continue
        err, _, _ = M.horizontal_errors(tr, res.truth)
        e = np.sort(err[tr.usable() & np.isfinite(err)])
        if e.size == 0:
            continue
        xmax = max(xmax, float(np.percentile(e, 99)))
        frac = np.arange(1, e.size + 1) / e.size
        s = M.error_stats(e)
        ax.step(np.concatenate([[0.0], e]), np.concatenate([[0.0], frac]), where="post", color=COLORS[name],
                lw=1.3 if name == "baseline" else 1.8, ls=(0, (4, 3)) if name == "baseline" else "-",
                label=f"{LABELS[name]}: median {s['median']:.1f} m, p95 {s['p95']:.1f} m")
    for th in M.THRESHOLDS_M:
        if th < xmax * 1.2:
            ax.axvline(th, color="#999999", lw=0.7, ls=":")
    ax.axhline(0.5, color="#bbbbbb", lw=0.6)
    ax.axhline(0.95, color="#bbbbbb", lw=0.6)
    ax.set_xlim(0, xmax * 1.1)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("horizontal error (m)")
    ax.set_ylabel("share of published estimates with error <= x")
    ax.set_title(_title(res, "error CDF"), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_metric(res, path: Path, n: int = 3) -> Path:
    """Metric matching at ``n`` keyframes spread over the drive: the fused BEV drawn over the aerial
    at the published estimate (left; truth and estimate marked) beside the score map (max over
    headings; peak, prior window centre and truth marked)."""
    from ..metric.correlate import rigid, warp

    samples = res.metric_samples
    pick = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, min(n, len(samples)))]
    fig = _figure(8.0, 3.6 * len(pick))
    for row, (t, mres, est_xyz) in enumerate(pick):
        ex, ey, eyaw = est_xyz
        g = mres.grid
        half = int(round((g.x_max_m + 5.0) / g.res_m))
        win = res.aerial.window(ex, ey, half)
        A = np.array([[g.res_m, 0.0, win.x_left + 0.5 * g.res_m], [0.0, -g.res_m, win.y_top - 0.5 * g.res_m],
                      [0.0, 0.0, 1.0]])
        M = np.linalg.inv(g.pixel_to_vehicle()) @ np.linalg.inv(rigid(ex, ey, eyaw)) @ A
        bev = warp(mres.mosaic, M, win.rgb.shape[:2])
        cover = warp((mres.weight > 0).astype(np.float32), M, win.rgb.shape[:2]) > 0.5
        over = win.rgb.astype(np.float32)
        over[cover] = 0.45 * over[cover] + 0.55 * bev[cover]
        ext = (win.x_left, win.x_left + win.rgb.shape[1] * g.res_m, win.y_top - win.rgb.shape[0] * g.res_m, win.y_top)
        ax = fig.add_subplot(len(pick), 2, 2 * row + 1)
        ax.imshow(np.clip(over, 0, 255).astype(np.uint8), extent=ext, interpolation="nearest")
        tx = ty = None
        truth = res.truth_map or res.truth
        if truth is not None:
            tx, ty, ok = truth.at([t])
            tx, ty = (float(tx[0]), float(ty[0])) if ok[0] else (None, None)
        if tx is not None:
            ax.plot([tx], [ty], "o", mfc="none", mec="#00d000", ms=10, mew=2, label="truth")
        ax.plot([ex], [ey], "+", color="#ff2020", ms=12, mew=2, label="estimate")
        ax.set_title(f"BEV ({mres.views} views) over the aerial at the estimate, t+{t - res.t_start:.0f} s",
                     fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        vol = mres.volume
        sc = np.nanmax(np.where(np.isfinite(vol.scores), vol.scores, np.nan), axis=0)
        ax2 = fig.add_subplot(len(pick), 2, 2 * row + 2)
        r = vol.xs[1] - vol.xs[0] if len(vol.xs) > 1 else g.res_m
        im = ax2.imshow(sc, extent=(vol.xs[0] - r / 2, vol.xs[-1] + r / 2, vol.ys[-1] - r / 2, vol.ys[0] + r / 2),
                        cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04, label="cosine (best heading)")
        if mres.measurement is not None:
            px, py, _ = mres.measurement.peak()
            ax2.plot([px], [py], "x", color="#00e0ff", ms=10, mew=2, label="camera peak")
        if tx is not None:
            ax2.plot([tx], [ty], "o", mfc="none", mec="#00d000", ms=10, mew=2, label="truth")
        ax2.set_title("score map around the prior", fontsize=9)
        ax2.legend(loc="lower right", fontsize=7)
        ax2.set_xlabel("x (m, map)", fontsize=8)
    fig.subplots_adjust(hspace=0.35)
    return _save(fig, path)


_VERDICTS = ("passed", "on probation", "cannot see", "ambiguous", "peaks hop", "inconsistent over a window",
             "inconsistent with the prior", "not measured")


def _published_calib_error(res) -> Optional[Dict[str, float]]:
    """The drive's published mounting error (drive.json conditions, simulated drives only): what the
    self-calibration should undo (it estimates truth - published), for the picture."""
    for d in (Path(res.bag), Path(res.bag).parent):
        f = d / "drive.json"
        if f.is_file():
            calib = (json.loads(f.read_text()).get("conditions") or {}).get("calib")
            if calib:
                return {"pitch_deg": -float(calib.get("pitch_deg", 0.0)), "height_m": -float(calib.get("height_m", 0.0))}
    return None


def plot_camera(res, path: Path) -> Path:
    """The camera at work, per keyframe: the integrity monitor's verdict (used, or why not), the usable
    ground share, the self-calibration's pitch and height (+- sigma; the published error to undo when
    the drive records it), and the usable-ground mask on the BEV at a good and at the poorest keyframe."""
    from ..core.integrity import usable_cells

    track = res.camera_track
    t0 = res.t_start
    t = np.array([r["t"] - t0 for r in track])
    fig = _figure(9.0, 10.0)
    gs = fig.add_gridspec(5, 2, height_ratios=[1.2, 0.8, 0.8, 0.8, 1.6])
    ax = fig.add_subplot(gs[0, :])
    known = [v for v in _VERDICTS if any(r["verdict"] == v for r in track)]
    known += sorted({r["verdict"] for r in track} - set(known))
    colours = {"passed": "#1a9850", "on probation": "#91bfdb", "not measured": "#bbbbbb"}
    for k, v in enumerate(known):
        sel = np.array([r["verdict"] == v for r in track])
        n = int(sel.sum())
        ax.plot(t[sel], np.full(n, k), "|", ms=12, mew=2, color=colours.get(v, "#d73027"),
                label=f"{v} ({n})")
    ax.set_yticks(range(len(known)))
    ax.set_yticklabels(known, fontsize=8)
    ax.set_ylim(-0.7, len(known) - 0.3)
    used = sum(r["used"] for r in track)
    ax.set_title(_title(res, f"the camera gate: {used} of {len(track)} keyframes moved the fix"), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax = fig.add_subplot(gs[1, :])
    us = np.array([r["usable"] for r in track], float)
    ax.plot(t, 100.0 * us, ".", ms=4, color="#4575b4")
    thr = res.config.get("integrity_min_usable_ground")
    if thr is not None:
        ax.axhline(100.0 * float(thr), color="#d73027", ls="--", lw=1, label="cannot see below")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_ylabel("usable ground %", fontsize=8)
    ax.set_ylim(0, 100)
    truth = _published_calib_error(res)
    for row, (key, unit, scale) in enumerate((("pitch_deg", "pitch (deg)", 1.0), ("height_m", "height (m)", 1.0))):
        ax = fig.add_subplot(gs[2 + row, :])
        have = [r for r in track if key in r]
        if have:
            tt = np.array([r["t"] - t0 for r in have])
            v = np.array([r[key][0] for r in have]) * scale
            sd = np.array([r[key][1] for r in have]) * scale
            ax.fill_between(tt, v - sd, v + sd, color="#fdae61", alpha=0.4, lw=0)
            ax.plot(tt, v, color="#f46d43", lw=1.5, label="self-calibration +- sigma")
            if truth is not None:
                ax.axhline(truth[key], color="#1a9850", ls="--", lw=1.2, label="published error to undo")
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.text(0.5, 0.5, "self-calibration off", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
    ax.set_xlabel("time (s)", fontsize=8)
    samples = res.metric_samples
    if samples:
        masks = [usable_cells(mres.mosaic, mres.weight)[1:] for _, mres, _ in samples]  # (lit, textured)
        u = [float(tex.mean()) for _, tex in masks]
        for col, i in enumerate((int(np.argmax(u)), int(np.argmin(u)))):
            ts, mres, _ = samples[i]
            lit, tex = masks[i]
            img = np.clip(np.asarray(mres.mosaic, np.float32), 0, 255) / 255.0
            over = img.copy()
            bad = (np.asarray(mres.weight) > 0) & ~lit
            over[bad] = 0.4 * over[bad] + 0.6 * np.array([1.0, 0.1, 0.1])
            flat = lit & ~tex
            over[flat] = 0.6 * over[flat] + 0.4 * np.array([1.0, 0.8, 0.0])
            ax = fig.add_subplot(gs[4, col])
            ax.imshow(np.rot90(over), interpolation="nearest")
            ax.set_title(f"BEV mask t+{ts - t0:.0f} s: {100 * u[i]:.0f} % textured\n(red: dark/saturated, yellow: "
                         "flat)", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.subplots_adjust(hspace=0.45)
    return _save(fig, path)


def plot_all(res, out_dir: Path) -> Dict[str, str]:
    """Draw every picture that the data allows -> {key: file name} (relative to out_dir)."""
    out_dir = Path(out_dir)
    made: Dict[str, str] = {}
    has_truth = res.truth is not None and len(res.truth) > 1
    todo = [("trajectory", plot_trajectory)]
    if has_truth:
        todo += [("error_time", plot_error_time), ("error_cdf", plot_error_cdf)]
    if getattr(res, "metric_samples", None) and getattr(res, "aerial", None) is not None:
        todo.append(("metric", plot_metric))
    if getattr(res, "camera_track", None):
        todo.append(("camera", plot_camera))
    for key, fn in todo:
        fn(res, out_dir / FILES[key])
        made[key] = FILES[key]
    return made

"""report.md of a replay run (from its metrics.json document), and the tables ``geoloc eval
compare`` prints."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

METHOD_ORDER = ("raw", "baseline", "corrected")
METHOD_NAMES = {"raw": "raw GNSS", "baseline": "GNSS+odom (no camera)", "corrected": "geoloc (camera)"}


def _get(d: Any, *path, default=None):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def fmt(v: Any, nd: int = 2, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v}{unit}"
    if isinstance(v, float):
        return f"{v:.{nd}f}{unit}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (first column left-aligned, the rest right-aligned)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns for the terminal."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# tables of one run


def accuracy_rows(doc: Dict) -> List[List[str]]:
    m = _get(doc, "metrics", "methods", default={})
    rows = []
    for key, label in (("mean", "mean error (m)"), ("median", "median error (m)"), ("p95", "p95 error (m)"),
                       ("max", "max error (m)"), ("rms", "RMS error (m)"), ("n", "estimates with truth")):
        rows.append([label] + [fmt(_get(m, k, "error_m", key)) for k in METHOD_ORDER])
    for key, label, nd in (("nees_mean", "mean NEES (2-D; honest = 2)", 2),
                           ("inside_68_pct", "truth inside 68% ellipse (%)", 1),
                           ("inside_95_pct", "truth inside 95% ellipse (%)", 1)):
        rows.append([label] + [fmt(_get(m, k, "covariance", key), nd) for k in METHOD_ORDER])
    for key, label in (("available_pct", "available (% of time)"), ("within_5m_pct", "within 5 m (% of time)"),
                       ("within_10m_pct", "within 10 m (% of time)"), ("within_25m_pct", "within 25 m (% of time)")):
        rows.append([label] + [fmt(_get(m, k, "availability", key), 1) for k in METHOD_ORDER])
    rows.append(["time to first fix (s)"] + [fmt(_get(m, k, "ttff_s"), 2) for k in METHOD_ORDER])
    return rows


def improvement_rows(doc: Dict) -> List[List[str]]:
    imp = _get(doc, "metrics", "improvement", default={}) or {}
    rows = []
    for key, label in (("corrected_vs_raw", "geoloc vs raw GNSS"), ("corrected_vs_baseline", "geoloc vs baseline"),
                       ("baseline_vs_raw", "baseline vs raw GNSS")):
        d = imp.get(key, {})
        rows.append([label, fmt(d.get("mean_ratio")), fmt(d.get("median_ratio")), fmt(d.get("p95_ratio")),
                     fmt(d.get("median_reduction_pct"), 1)])
    return rows


def status_rows(doc: Dict) -> List[List[str]]:
    m = _get(doc, "metrics", "methods", default={})
    names: List[str] = []
    for k in ("corrected", "baseline"):
        for s in (_get(m, k, "status_pct", default={}) or {}):
            if s not in names:
                names.append(s)
    return [[s] + [fmt(_get(m, k, "status_pct", s), 1) for k in ("corrected", "baseline")] for s in names]


def camera_rows(doc: Dict) -> List[List[str]]:
    m = _get(doc, "metrics", default={})
    c = _get(m, "methods", "corrected", default={})
    rec = m.get("recall") or {}
    rows = [["keyframes", fmt(c.get("keyframes"))], ["keyframes with a camera match used", fmt(c.get("matches_used"))]]
    if rec:
        rows += [[f"recall@{k} of the true tile (within {fmt(rec.get('radius_m'), 1)} m, {rec.get('n')} keyframes) (%)",
                  fmt(rec.get(f"r@{k}"), 1)] for k in (1, 5, 10)]
    st = _get(doc, "localizer_stats", "corrected", default={}) or {}
    for key, label in (("matches_rejected", "matches rejected by the filter"),
                       ("match_skipped", "keyframes not matched")):
        d = st.get(key) or {}
        if isinstance(d, dict) and d:
            rows.append([f"{label}: " + ", ".join(f"{k} x{v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])),
                         fmt(sum(v for v in d.values() if isinstance(v, int)))])
    cm = c.get("compute_ms") or {}
    rows += [[f"compute per keyframe, {k} (ms)", fmt(cm.get(k), 1)] for k in ("mean", "median", "p95", "max")]
    return rows


def speed_rows(doc: Dict) -> List[List[str]]:
    t = doc.get("timing", {})
    return [["bag duration (s)", fmt(t.get("bag_duration_s"), 1)], ["replay wall time (s)", fmt(t.get("wall_s"), 1)],
            ["speed-up over real time (whole replay: 3 methods)", fmt(t.get("speedup_total"), 2, "x")],
            ["speed-up of the corrected localizer alone (+ reading)", fmt(t.get("speedup_corrected"), 2, "x")],
            ["reading + decoding (s)", fmt(t.get("read_decode_s"), 2)],
            ["full localizer (s)", fmt(t.get("corrected_s"), 2)],
            ["baseline localizer (s)", fmt(t.get("baseline_s"), 2)]]


def write_report(doc: Dict, path: Path) -> Path:
    """report.md: what was run (exact command), warnings, the metric tables and the pictures."""
    path = Path(path)
    bag = doc.get("bag", {})
    model = doc.get("model", {})
    idx = doc.get("index", {})
    L: List[str] = [f"# Replay evaluation: {doc.get('run')}", ""]
    L += [f"- bag: `{bag.get('path')}` ({bag.get('storage')}, {fmt(bag.get('duration_s'), 1)} s)",
          f"- model: {model.get('preset')} (fingerprint {str(model.get('fingerprint', ''))[:12]}, dim "
          f"{model.get('dim')}), backend {doc.get('backend')}",
          f"- index: `{idx.get('path')}` ({idx.get('num_tiles')} tiles, spacing {idx.get('spacing_m')} m, "
          f"{idx.get('heading_bins')} heading bins)",
          f"- localizer config: {doc.get('config_name')} (all values in metrics.json)",
          f"- ground truth: {_get(doc, 'topics_used', 'gt') or 'none'}",
          f"- geoloc_ros {doc.get('tool_version')}", "", "Command:", "", "```",
          str(doc.get("command") or "(Python API)"),
          "```", ""]
    warn = []
    if doc.get("partial"):
        warn.append(f"**Partial evaluation**: {doc['partial']}")
    for n in _get(doc, "metrics", "not_computed", default=[]) or []:
        warn.append(f"not computed: {n}")
    for n in _get(doc, "topics_used", "notes", default=[]) or []:
        warn.append(n)
    if doc.get("drops"):
        warn.append("dropped messages: " + ", ".join(f"{k} x{v}" for k, v in sorted(doc["drops"].items())))
    if warn:
        L += ["## Notes", ""] + [f"- {w}" for w in warn] + [""]
    L += ["## Accuracy, covariance honesty, availability", "",
          "Three methods on the same bag in the same run: the raw GNSS fixes, the same filter fed GNSS + odometry "
          "without the camera (what a robot_localization EKF would give), and geoloc with the camera. "
          "Definitions: docs/evaluation.md.", "",
          md_table(["metric"] + [METHOD_NAMES[k] for k in METHOD_ORDER], accuracy_rows(doc)), ""]
    if _get(doc, "metrics", "improvement"):
        L += ["## Improvement", "", "Ratios reference / method (> 1: the method has smaller errors); reduction of "
              "the median error in percent.", "",
              md_table(["comparison", "mean ratio", "median ratio", "p95 ratio", "median reduction (%)"],
                       improvement_rows(doc)), ""]
    L += ["## Status (share of time)", "", md_table(["status", "geoloc", "baseline"], status_rows(doc)), "",
          "## Camera matching and compute", "", md_table(["", "geoloc"], camera_rows(doc)), "",
          "## Speed", "", md_table(["", ""], speed_rows(doc)), ""]
    pics = doc.get("pictures", {}) or {}
    captions = {"trajectory": "Trajectory: truth (black), raw GNSS fixes (red dots), baseline (blue), geoloc (green; "
                              "circles: keyframes where a camera match was used) over the orthophoto.",
                "error_time": "Horizontal error over time. Strips on top: status of geoloc and of the baseline, and "
                              "GNSS fix availability (white: no estimate).",
                "error_cdf": "Error CDF: share of published estimates with error below x (dotted: 5/10/25 m)."}
    if pics:
        L += ["## Pictures", ""]
        for key, fname in pics.items():
            L += [f"![{key}]({fname})", "", captions.get(key, ""), ""]
    used = doc.get("topics_used", {})
    L += ["## Input", "", md_table(["role", "topic"], [[k, f"`{v}`"] for k, v in used.items()
                                                       if k in ("image", "fix", "odom", "gt") and v]), ""]
    if doc.get("skipped_topics"):
        L += ["Skipped topics:", ""] + [f"- `{k}`: {v}" for k, v in sorted(doc["skipped_topics"].items())] + [""]
    L += ["Files: `metrics.json` (everything above, machine-readable), `estimates.csv` (every published estimate "
          "with its truth and error), `estimates/` (rosbag2 MCAP of /geoloc/fix, /geoloc/pose, the baseline's "
          "/geoloc_baseline/*, /gnss/fix and /gnss/fix_truth: open it in Foxglove).", ""]
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("\n".join(L))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------
# compare


COMPARE_ROWS = [
    ("corrected median error (m)", ("metrics", "methods", "corrected", "error_m", "median"), 2),
    ("corrected mean error (m)", ("metrics", "methods", "corrected", "error_m", "mean"), 2),
    ("corrected p95 error (m)", ("metrics", "methods", "corrected", "error_m", "p95"), 2),
    ("corrected max error (m)", ("metrics", "methods", "corrected", "error_m", "max"), 2),
    ("baseline median error (m)", ("metrics", "methods", "baseline", "error_m", "median"), 2),
    ("raw GNSS median error (m)", ("metrics", "methods", "raw", "error_m", "median"), 2),
    ("median ratio vs raw", ("metrics", "improvement", "corrected_vs_raw", "median_ratio"), 2),
    ("median ratio vs baseline", ("metrics", "improvement", "corrected_vs_baseline", "median_ratio"), 2),
    ("corrected NEES (2 = honest)", ("metrics", "methods", "corrected", "covariance", "nees_mean"), 2),
    ("corrected inside 95% ellipse (%)", ("metrics", "methods", "corrected", "covariance", "inside_95_pct"), 1),
    ("corrected available (%)", ("metrics", "methods", "corrected", "availability", "available_pct"), 1),
    ("corrected within 5 m (%)", ("metrics", "methods", "corrected", "availability", "within_5m_pct"), 1),
    ("corrected within 10 m (%)", ("metrics", "methods", "corrected", "availability", "within_10m_pct"), 1),
    ("time to first fix (s)", ("metrics", "methods", "corrected", "ttff_s"), 2),
    ("camera matches used", ("metrics", "methods", "corrected", "matches_used"), 0),
    ("recall@1 (%)", ("metrics", "recall", "r@1"), 1),
    ("recall@10 (%)", ("metrics", "recall", "r@10"), 1),
    ("compute per keyframe, median (ms)", ("metrics", "methods", "corrected", "compute_ms", "median"), 1),
    ("speed-up over real time", ("timing", "speedup_total"), 2),
    ("bag duration (s)", ("bag", "duration_s"), 1),
]


def compare_table(docs: Sequence[Dict], names: Optional[Sequence[str]] = None) -> List[List[str]]:
    """Rows: metric, then one column per run (same order as ``docs``). Identity rows first."""
    names = list(names or [d.get("run", "?") for d in docs])
    rows = [["bag"] + [_get(d, "bag", "name", default="?") for d in docs],
            ["model"] + [f"{_get(d, 'model', 'preset')}-{str(_get(d, 'model', 'fingerprint', default=''))[:8]}"
                         for d in docs],
            ["backend"] + [str(d.get("backend")) for d in docs],
            ["config"] + [str(d.get("config_name")) for d in docs]]
    for label, path, nd in COMPARE_ROWS:
        rows.append([label] + [fmt(_get(d, *path), nd) for d in docs])
    rows.append(["partial"] + ["yes" if d.get("partial") else "no" for d in docs])
    return rows

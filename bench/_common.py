"""Benchmark helpers: machine info, a printed table, and a JSON record."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Dict, List

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, seconds: float, min_reps: int = 3, max_reps: int = 200) -> float:
    """Median seconds of ``fn()`` after one warm-up call (allocations, ORT arena, torch kernels):
    at least ``min_reps`` calls, then more until ``seconds`` have passed or ``max_reps`` calls."""
    import statistics

    fn()
    times = []
    t_end = time.perf_counter() + seconds
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> Dict:
    import numpy

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "numpy": numpy.__version__, "processor": platform.processor() or platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def table(rows: List[Dict], columns: List[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line, sep] + ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells])


def write(name: str, rows: List[Dict], out: Path | None = None, **extra) -> Path:
    out = Path(out) if out else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "machine": machine(), "rows": rows, **extra}, indent=2) + "\n")
    return out

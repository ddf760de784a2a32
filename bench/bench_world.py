"""World generation time and size vs world extent.

    .venv/bin/python bench/bench_world.py [--sizes 500 1000 2000] [--out bench/results/world.json]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[500.0, 1000.0, 2000.0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from geoloc_ros.sim.generate import generate_world

    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        w = generate_world(seed=args.seed, size_m=size)
        t_gen = time.perf_counter() - t0
        tmp = Path(tempfile.mkdtemp())
        t1 = time.perf_counter()
        w.save(tmp / "w")
        t_save = time.perf_counter() - t1
        mb = sum(f.stat().st_size for f in (tmp / "w").iterdir()) / 1e6
        shutil.rmtree(tmp)
        km2 = (size / 1000.0) ** 2
        rows.append({"size_m": int(size), "pixels": f"{w.meta.shape[0]}^2", "buildings": len(w.buildings),
                     "generate_s": round(t_gen, 2), "write_s": round(t_save, 2), "s_per_km2": round(t_gen / km2, 2),
                     "disk_MB": round(mb, 1)})
    print(table(rows, list(rows[0])))
    print(f"wrote {write('world', rows, args.out)}")


if __name__ == "__main__":
    main()

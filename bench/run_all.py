"""Run every benchmark in this folder (each prints a table and writes bench/results/<name>.json)."""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# trains every model preset (~75 min on 2 cores, needs the training dataset): run it on its own
SEPARATE = {"bench_models": "python bench/bench_models.py --data data/ds_v2"}

if __name__ == "__main__":
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.stem} ===", flush=True)
        if script.stem in SEPARATE:
            print(f"{script.stem}: not part of run_all; run it on its own: {SEPARATE[script.stem]}", flush=True)
            continue
        sys.argv = [str(script)]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as exc:  # a benchmark that cannot run here says why; the others still run
            if exc.code not in (None, 0):
                print(f"{script.stem}: not run: {exc.code}", flush=True)

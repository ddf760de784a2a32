"""Run every benchmark in this folder (each prints a table and writes bench/results/<name>.json)."""
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.stem} ===", flush=True)
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")

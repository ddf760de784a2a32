"""Encoder ablation: every model family trained and evaluated on the same data, the same way.

    .venv/bin/python bench/bench_models.py [--data data/ds_v2] [--runs runs/ablation] [--only NAME ...]

The dataset is the one the shipped weights were trained on (the commands are in
geoloc_ros/weights/README.md; ~25 min to generate on 2 cores). The whole benchmark took about
75 minutes on 2 CPU cores (35 of them training the two ViT presets); rerun to resume.

Phases (each resumable: rerun the same command after an interruption and it continues):
  train   each entry below with the same protocol (``PROTOCOL``: same training subset, steps,
          batch, seed, loss), trunk-feature caches shared between entries with the same trunk;
          ``transgeo_lite_crop`` is TransGeo's second stage, started from ``transgeo_lite``'s best
          weights and trained for ``STAGE2_EPOCHS`` more epochs
  eval    retrieval on ``test`` (same towns, unseen area: same-area) and ``test_world`` (a held-out
          town: cross-area), ``--max-sequences`` queries each, gallery = their tiles; R@1/5/10/1%,
          hit@25m, and the sequence-length curve (newest 1, 3, 5 and all T frames)
  cost    parameters, GFLOPs per frame / per aerial tile / for the temporal fusion (torch flop
          counter), and CPU latency with ONNX Runtime (exported with ``geoloc export onnx``'s code,
          parity-checked): one keyframe (frame graph + fusion of T cached frames) and one aerial tile,
          as a ratio to seqgeo_lite measured in the same run (the machine is shared and noisy)
Prints two tables (cost and accuracy; the sequence-length curve as "1 / 3 / 5 / T frames") and
writes ``bench/results/bench_models.json`` (``--out``); ``--markdown FILE`` writes the same
tables as markdown and ``--plot PNG`` the accuracy-vs-latency and sequence-length picture. The
tables and picture in docs/model.md come from
``bench/bench_models.py --seconds 4 --markdown FILE --plot docs/img/model_ablation.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, timed, write  # noqa: E402

PROTOCOL = dict(epochs=4, batch=32, max_train_sequences=3000, max_val_sequences=500, variants=1, seed=0)
STAGE2_EPOCHS = 2
# name -> (preset, training overrides, init from entry)
ENTRIES = {
    "seqgeo_lite": ("seqgeo_lite", {}, None),
    "seqgeo_lite -CF": ("seqgeo_lite", {"counterfactual_weight": 0.0}, None),
    "seqgeo_lite -LS": ("seqgeo_lite", {"mirror_prob": 0.0}, None),
    "seqgeo_lite -CF -LS": ("seqgeo_lite", {"counterfactual_weight": 0.0, "mirror_prob": 0.0}, None),
    "l2ltr_lite": ("l2ltr_lite", {}, None),
    "l2ltr_lite_sc": ("l2ltr_lite_sc", {}, None),
    "hafusion_lite": ("hafusion_lite", {}, None),
    "transgeo_lite": ("transgeo_lite", {}, None),
    "transgeo_lite_crop": ("transgeo_lite_crop", {"epochs": STAGE2_EPOCHS}, "transgeo_lite"),
}
BASELINE = "seqgeo_lite"


def run_dir(runs: Path, name: str) -> Path:
    return runs / name.replace(" ", "").replace("-", "_no_").strip("_")


def checkpoint_of(runs: Path, name: str) -> Path:
    d = run_dir(runs, name)
    return d / ("best.pt" if (d / "best.pt").is_file() else "last.pt")


def train(name: str, data: Path, runs: Path) -> Path:
    from geoloc_ros.models.config import load_preset
    from geoloc_ros.training.trainer import TrainConfig, Trainer

    preset, over, init = ENTRIES[name]
    d = run_dir(runs, name)
    if (d / "last.pt").is_file():
        return checkpoint_of(runs, name)
    cfg = TrainConfig(**{**PROTOCOL, **over})
    init_ck = checkpoint_of(runs, init) if init else None
    if init_ck is not None and not init_ck.is_file():
        train(init, data, runs)
        init_ck = checkpoint_of(runs, init)
    print(f"== train {name}: preset {preset}, {over or 'protocol defaults'}" + (f", init {init_ck}" if init else ""))
    t0 = time.perf_counter()
    res = Trainer(load_preset(preset), cfg, data, d, init=init_ck, cache_dir=runs / "cache").run(
        f"bench/bench_models.py train {name}")
    (d / "train_seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}) + "\n")
    return Path(res["checkpoint"])


def evaluate(name: str, data: Path, runs: Path, max_sequences: int) -> dict:
    """The rows of `geoloc eval retrieval --splits test test_world --lengths 1 3 5` for the model's own
    temporal fusion, keyed "same_1" .. "cross_T" (cached in the run folder)."""
    from geoloc_ros.tools.eval_retrieval import evaluate_checkpoint

    out = run_dir(runs, name) / f"eval_{max_sequences}.json"
    if out.is_file():
        return json.loads(out.read_text())
    rows, manifest = evaluate_checkpoint(checkpoint_of(runs, name), data, ("test", "test_world"), (1, 3, 5),
                                         runs / "cache", max_sequences, modes=("model",))
    label = {"test": "same", "test_world": "cross"}
    T = max(r["frames"] for r in rows)
    res = {"fingerprint": manifest["fingerprint"], "T": T,
           **{f"{label[r['split']]}_{'T' if r['frames'] == T else r['frames']}": r for r in rows}}
    out.write_text(json.dumps(res, indent=2) + "\n")
    return res


def gflops(model, T: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / 1e9

    cfg = model.cfg
    g = torch.rand(1, 3, *cfg.ground_size)
    a = torch.rand(1, 3, *cfg.aerial_size)
    f = torch.nn.functional.normalize(torch.rand(1, T, cfg.dim), dim=-1)
    frame = count(lambda: model.ground(g))
    fuse = count(lambda: model.fuse(f))
    return {"gflops_frame": frame, "gflops_fuse": fuse, "gflops_seq": T * frame + fuse,
            "gflops_aerial": count(lambda: model.aerial(a))}


def latency(checkpoint: Path, export: Path, T: int, seconds: float) -> dict:
    import numpy as np

    from geoloc_ros.inference.artifacts import is_export_dir
    from geoloc_ros.inference.onnx_export import export_onnx
    from geoloc_ros.inference.ort_backend import OrtEncoder
    from geoloc_ros.sim.samples import synthetic_inputs

    if not is_export_dir(export):
        export_onnx(checkpoint, export, force=True)
    enc = OrtEncoder(export, threads=1)
    frames, tiles = synthetic_inputs(enc.config, n_frames=T, n_tiles=1)
    feats = enc.frame_features(frames)
    pad = np.zeros((1, T), bool)

    def ms(fn):  # at least 5 calls, then as many as fit in ``seconds``
        return 1000.0 * timed(fn, seconds, min_reps=5, max_reps=10 ** 9)

    return {"ms_keyframe": ms(lambda: (enc.frame_features(frames[-1:]), enc.fuse(feats[None], pad))),
            "ms_aerial": ms(lambda: enc.encode_aerial(tiles[:1]))}


def cost(name: str, runs: Path, T: int, seconds: float) -> dict:
    from geoloc_ros.models.crossview import count_parameters, load_checkpoint

    ck = checkpoint_of(runs, name)
    model, manifest = load_checkpoint(ck)
    out = {"params_m": count_parameters(model)["total"] / 1e6, **gflops(model, T)}
    # one export per preset: the graphs and their cost do not depend on the training options
    out.update(latency(ck, runs / "onnx" / manifest["preset"], T, seconds))
    return out


def plot(rows, path: Path) -> None:
    """Cross-area R@10 against keyframe latency, and cross-area R@10 against the number of frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, r in enumerate(rows):  # same colour per preset in both panels; one legend
        marker = "s" if r["name"].startswith(BASELINE) else "o"
        a.scatter(r["keyframe vs base"], r["cross R@10"], s=50, color=f"C{i}", marker=marker)
        b.plot(r["curve"]["frames"], r["curve"]["cross R@10"], marker=marker, color=f"C{i}", label=r["name"])
    a.set_xlabel(f"keyframe latency, x {BASELINE} (ONNX Runtime, 1 CPU thread)")
    a.set_ylabel("cross-area R@10 (%)")
    a.set_title("accuracy vs cost (up and left is better; colours as in the legend)")
    a.grid(alpha=0.3)
    b.set_xlabel("frames in the query sequence (newest)")
    b.set_ylabel("cross-area R@10 (%)")
    b.set_title("sequence-length curve")
    b.set_xticks(rows[0]["curve"]["frames"])
    b.grid(alpha=0.3)
    b.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/ds_v2"),
                    help="dataset made by `geoloc sim dataset` (with test and test_world splits)")
    ap.add_argument("--runs", type=Path, default=Path("runs/ablation"), help="run folders and shared caches")
    ap.add_argument("--only", nargs="*", default=None, choices=list(ENTRIES), metavar="NAME")
    ap.add_argument("--phase", nargs="*", default=["train", "eval", "cost"], choices=["train", "eval", "cost"])
    ap.add_argument("--max-sequences", type=int, default=1000, help="queries (and gallery tiles) per test split")
    ap.add_argument("--seconds", type=float, default=2.0, help="latency measuring time per graph")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    ap.add_argument("--plot", type=Path, default=None, help="also draw accuracy vs latency and the sequence-length "
                                                            "curves into this PNG")
    args = ap.parse_args(argv)
    if not (args.data / "dataset.json").is_file():
        raise SystemExit(f"{args.data} is not a dataset; make it with the commands in geoloc_ros/weights/README.md "
                         f"or pass --data")
    import torch

    torch.set_num_threads(args.threads)
    names = args.only or list(ENTRIES)
    if "cost" in args.phase and BASELINE not in names:
        names = [BASELINE] + names  # latency is reported relative to the baseline of the same run
    t0 = time.perf_counter()
    if "train" in args.phase:
        for n in names:
            train(n, args.data, args.runs)
    rows = []
    for n in names:
        if not checkpoint_of(args.runs, n).is_file():
            print(f"{n}: not trained yet (run with --phase train)")
            continue
        row = {"name": n}
        if "eval" in args.phase:
            ev = evaluate(n, args.data, args.runs, args.max_sequences)
            T = ev["T"]
            for label in ("same", "cross"):
                r = ev[f"{label}_T"]
                row.update({f"{label} R@{k}": round(r[f"R@{k}"], 1) for k in ("1", "5", "10", "1%")})
            row["curve"] = {"frames": [1, 3, 5, T]}
            for label in ("same", "cross"):  # the sequence-length curve: newest 1, 3, 5, all T frames
                for k in ("1", "10"):
                    row["curve"][f"{label} R@{k}"] = [ev[f"{label}_{L}"][f"R@{k}"] for L in (1, 3, 5, "T")]
                    row[f"{label} R@{k} by T"] = " / ".join(f"{v:.1f}" for v in row["curve"][f"{label} R@{k}"])
        else:
            T = 7
        if "cost" in args.phase:
            c = cost(n, args.runs, T, args.seconds)
            row.update({"params M": round(c["params_m"], 1), "GFLOPs/seq": round(c["gflops_seq"], 2),
                        "GFLOPs/tile": round(c["gflops_aerial"], 2), "ms/keyframe": round(c["ms_keyframe"], 1),
                        "ms/tile": round(c["ms_aerial"], 1)})
        rows.append(row)
    base = next((r for r in rows if r["name"] == BASELINE), None)
    if base and "ms/keyframe" in base:
        for r in rows:
            r["keyframe vs base"] = round(r["ms/keyframe"] / base["ms/keyframe"], 2)
    cost_cols = ["name", "params M", "GFLOPs/seq", "GFLOPs/tile", "ms/keyframe", "keyframe vs base", "ms/tile"]
    acc_cols = ["same R@1", "same R@5", "same R@10", "same R@1%", "cross R@1", "cross R@5", "cross R@10", "cross R@1%"]
    curve_cols = ["name", "same R@1 by T", "same R@10 by T", "cross R@1 by T", "cross R@10 by T"]
    tables = [[c for c in cost_cols + acc_cols if any(c in r for r in rows)],
              [c for c in curve_cols if any(c in r for r in rows)]]
    for cols in tables:
        if len(cols) > 1:
            print(table(rows, cols))
    out = write("bench_models", rows, args.out, protocol=PROTOCOL, stage2_epochs=STAGE2_EPOCHS,
                data=str(args.data), max_sequences=args.max_sequences)
    if args.markdown:
        md = []
        for cols in tables:
            if len(cols) > 1:
                md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                md += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows] + [""]
        args.markdown.write_text("\n".join(md))
    if args.plot and rows and "curve" in rows[0] and "keyframe vs base" in rows[0]:
        plot(rows, args.plot)
    print(f"bench_models: {len(rows)} entries in {time.perf_counter() - t0:.0f} s; {out}")
    return out


if __name__ == "__main__":
    main()

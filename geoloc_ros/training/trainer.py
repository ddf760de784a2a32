"""Training loop on cached trunk features: resumable, deterministic with a seed, CPU or CUDA.

Per step: a batch of B sequences and their aerial tiles, drawn by ``GeoBatchSampler`` (half
of each batch are geographic neighbours of the others: hard negatives near, but not at, the
true position; no two samples closer than ``min_separation_m`` so no false negatives).
Augmentation: a cached semantic variant per view, a consistent left-right mirror of both
views (GeoDTR layout simulation: the mirrored ground sequence matches the mirrored tile),
and sequential dropout (each sample drops a random number of frames, chosen without
replacement, always keeping at least ``min_frames``).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch

from ..core.config import check_keys
from ..core.errors import IncompatibleArtifact, InvalidArgument, OutputExists
from ..models import losses
from ..models.config import ModelConfig
from ..models.crossview import CrossViewModel, build_model, count_parameters, load_checkpoint, save_checkpoint
from .data import SplitData, build_feature_cache
from .evaluate import recall_at_k

log = logging.getLogger(__name__)
STATE_NAME = "last_state.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch: int = 32
    lr: float = 3e-4
    lr_backbone: float = 5e-5
    weight_decay: float = 0.03
    warmup_steps: int = 100
    loss: str = "triplet"
    gamma: float = 10.0
    counterfactual_weight: float = 5.0
    seq_dropout: float = 0.5
    min_frames: int = 1
    mirror_prob: float = 0.5
    hard_fraction: float = 0.5
    neighbour_min_m: float = 20.0
    neighbour_max_m: float = 150.0
    min_separation_m: float = 15.0
    variants: int = 2
    max_train_sequences: int = 0
    max_val_sequences: int = 2000
    seed: int = 0
    device: str = "auto"
    save_every_s: float = 300.0

    def __post_init__(self):
        if self.loss not in losses.LOSSES:
            raise InvalidArgument(f"loss {self.loss!r} is not one of {', '.join(losses.LOSSES)}")
        if self.batch < 2:
            raise InvalidArgument("batch must be at least 2 (the losses use in-batch negatives)")
        if self.epochs < 1 or self.variants < 1:
            raise InvalidArgument("epochs and variants must be >= 1")
        if self.counterfactual_weight < 0 or not (0.0 <= self.mirror_prob <= 1.0):
            raise InvalidArgument("counterfactual_weight must be >= 0 and mirror_prob in 0..1")

    @classmethod
    def from_dict(cls, d: Dict) -> "TrainConfig":
        check_keys(cls, d, "training option")
        return cls(**d)


class GeoBatchSampler:
    """Batches of sequence indices with geographic hard negatives and no near-duplicates."""

    def __init__(self, xy: np.ndarray, world: List[str], batch: int, hard_fraction: float, near_min: float,
                 near_max: float, min_sep: float, seed: int):
        self.xy, self.batch = np.asarray(xy, float), batch
        self.world = np.asarray([hash(w) % (2 ** 31) for w in world])
        self.hard, self.near_min, self.near_max, self.min_sep = hard_fraction, near_min, near_max, min_sep
        self.seed = seed

    def __len__(self) -> int:
        return len(self.xy) // self.batch

    def _ok(self, j: int, chosen: List[int]) -> bool:
        if not chosen:
            return True
        c = np.asarray(chosen)
        d = np.hypot(*(self.xy[c] - self.xy[j]).T)
        return bool(np.all((d >= self.min_sep) | (self.world[c] != self.world[j])))

    def epoch(self, epoch: int) -> Iterator[List[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.xy))
        used = np.zeros(len(self.xy), bool)
        pos = 0
        for _ in range(len(self)):
            chosen: List[int] = []
            n_anchor = max(1, int(round(self.batch * (1.0 - self.hard))))
            while len(chosen) < self.batch and pos < len(order):
                j = order[pos]
                pos += 1
                if used[j] or not self._ok(j, chosen):
                    continue
                chosen.append(j)
                used[j] = True
                if len(chosen) >= n_anchor:
                    continue
                # a neighbour of the anchor: near but not at its position
                d = np.hypot(*(self.xy - self.xy[j]).T)
                near = np.nonzero((d >= self.near_min) & (d <= self.near_max) & ~used &
                                  (self.world == self.world[j]))[0]
                if len(near):
                    k = near[rng.integers(len(near))]
                    if self._ok(k, chosen):
                        chosen.append(k)
                        used[k] = True
            if len(chosen) < 2:
                return
            yield chosen


def sequence_dropout(B: int, T: int, p: float, min_frames: int, g: torch.Generator) -> torch.Tensor:
    """[B, T] padding mask: with probability p a sample drops k ~ U{1..T-min_frames} frames,
    chosen without replacement (each sample its own mask)."""
    pad = torch.zeros(B, T, dtype=torch.bool)
    if T <= min_frames:
        return pad
    for b in range(B):
        if torch.rand(1, generator=g).item() < p:
            k = int(torch.randint(1, T - min_frames + 1, (1,), generator=g))
            pad[b, torch.randperm(T, generator=g)[:k]] = True
    return pad


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def encode_split(model: CrossViewModel, data: SplitData, ground: np.ndarray, aerial: np.ndarray, *,
                 lengths=(None,), mode: str = "model", device=None, batch: int = 64) -> Dict:
    """Descriptors of a split from cached trunk features (variant 0).

    ``mode``: "model" (the model's temporal fusion), "mean" (mean of per-frame descriptors),
    "centre" (the centre frame only). ``lengths``: number of newest frames used (None = all).
    Returns {"aerial": [S, D], length: [S, D]}.
    """
    device = device or torch.device("cpu")
    model.eval()
    S, T = data.seq_frames.shape
    out: Dict = {}
    with torch.no_grad():
        out["aerial"] = torch.cat([model.aerial_from_trunk(torch.from_numpy(np.asarray(aerial[0, i:i + batch],
                                                                                         np.float32)).to(device)).cpu()
                                   for i in range(0, S, batch)]).numpy()
        frame_desc = []
        for i in range(0, len(data.frame_paths), batch * 4):
            f = torch.from_numpy(np.asarray(ground[0, i:i + batch * 4], np.float32)).to(device)
            frame_desc.append(model.frame_descriptors(f, 1, len(f)).squeeze(0).cpu())
        fd = torch.cat(frame_desc)[torch.from_numpy(data.seq_frames)]  # [S, T, D]
        for L in lengths:
            x = fd if L is None else fd[:, T - L:]
            if mode == "centre":
                x = x[:, x.shape[1] // 2:x.shape[1] // 2 + 1]
            pad = torch.zeros(x.shape[:2], dtype=torch.bool)
            if mode == "mean":
                from ..models.temporal import MeanFusion

                q = MeanFusion()(x, pad)
            else:
                q = torch.cat([model.fuse(x[i:i + batch].to(device), pad[i:i + batch].to(device)).cpu()
                               for i in range(0, S, batch)])
            out[L] = q.numpy()
    return out


def evaluate_cached(model, data, ground, aerial, device=None, lengths=(None,), mode="model") -> Dict:
    enc = encode_split(model, data, ground, aerial, lengths=lengths, mode=mode, device=device)
    truth = np.arange(len(data.records))
    res = {}
    for L in lengths:
        res["T" if L is None else str(L)] = recall_at_k(enc[L], enc["aerial"], truth, gallery_xy=data.xy,
                                                        query_xy=data.xy)
    return res


class Trainer:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data_root: Path, out: Path, *,
                 force: bool = False, progress: bool = True, init: Optional[Path] = None,
                 cache_dir: Optional[Path] = None):
        """``init``: start from the weights of this checkpoint (same parameter shapes; e.g. the
        first stage of a two-stage preset) instead of ImageNet. ``cache_dir``: where trunk
        features are cached (default OUT/cache); runs of presets with the same trunk can share one."""
        self.model_cfg, self.cfg, self.data_root, self.out = model_cfg, cfg, Path(data_root), Path(out)
        self.progress, self.init = progress, None if init is None else Path(init)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.out / "cache"
        self.device = pick_device(cfg.device)
        self._check_out(force)
        torch.manual_seed(cfg.seed)
        self.model = build_model(model_cfg, pretrained=True)
        if self.init is not None:
            init_weights(self.model, self.init)
        self.model.to(self.device)

    def _check_out(self, force: bool) -> None:
        run = self.out / "run.json"
        want = {"model": self.model_cfg.to_dict(), "train": asdict(self.cfg),
                "data": str(self.data_root.resolve()), "init": None if self.init is None else str(self.init.resolve())}
        if run.is_file():
            have = json.loads(run.read_text())
            if {k: have.get(k) for k in want} != want and not force:
                raise OutputExists(f"{self.out} holds a run with other settings; pass --force to replace it or "
                                   f"choose another --out")
        elif self.out.is_dir() and any(self.out.iterdir()) and not force:
            raise OutputExists(f"{self.out} is not empty and is not a training run; pass --force or another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        if force and run.is_file() and json.loads(run.read_text()).get("model") != want["model"]:
            (self.out / STATE_NAME).unlink(missing_ok=True)
        run.write_text(json.dumps(want, indent=2) + "\n")

    def _optimizer(self):
        backbone, rest = [], []
        for n, p in self.model.named_parameters():
            if p.requires_grad:
                (backbone if ".tail." in f".{n}" else rest).append(p)
        return torch.optim.AdamW([{"params": backbone, "lr": self.cfg.lr_backbone},
                                  {"params": rest, "lr": self.cfg.lr}], weight_decay=self.cfg.weight_decay)

    def run(self, command: str = "", stop_after_s: Optional[float] = None) -> Dict:
        """Train to ``epochs`` (resuming a saved state). With ``stop_after_s``, save and return early
        (``paused`` True) once that much time has passed: a later run continues exactly there."""
        from tqdm import tqdm

        cfg, model, dev = self.cfg, self.model, self.device
        cache = self.cache_dir
        train, g_tr, a_tr = build_feature_cache(model, self.data_root, "train", cache, variants=cfg.variants,
                                                seed=cfg.seed, max_sequences=cfg.max_train_sequences)
        val = None
        try:
            val = build_feature_cache(model, self.data_root, "val", cache, variants=1, seed=cfg.seed,
                                      max_sequences=cfg.max_val_sequences)
        except Exception as exc:  # a dataset without a val split still trains
            log.warning("no validation split (%s): keeping the last epoch", exc)
        S, T = train.seq_frames.shape
        if T > self.model_cfg.max_frames:
            raise InvalidArgument(f"sequences of {T} frames exceed the model's max_frames {self.model_cfg.max_frames}")
        sampler = GeoBatchSampler(train.xy, train.world, cfg.batch, cfg.hard_fraction, cfg.neighbour_min_m,
                                  cfg.neighbour_max_m, cfg.min_separation_m, cfg.seed)
        opt = self._optimizer()
        steps_per_epoch = max(len(sampler), 1)
        total = steps_per_epoch * cfg.epochs

        def lr_factor(step):
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        start_epoch, start_batch, best, history, g_state = 0, 0, -1.0, [], None
        state_path = self.out / STATE_NAME
        if state_path.is_file():
            st = torch.load(state_path, map_location="cpu", weights_only=False)
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
            start_epoch, start_batch, best, history = st["epoch"], st["batch"], st["best"], st["history"]
            g_state = st.get("generator")
            torch.set_rng_state(st["torch_rng"])
            log.info("resuming %s at epoch %d batch %d", self.out, start_epoch + 1, start_batch)
            print(f"train: resuming {self.out} at epoch {start_epoch + 1}, batch {start_batch}")
        mc = self.model_cfg
        use_cf = mc.encoder == "cnn" and mc.aggregator == "layout" and cfg.counterfactual_weight > 0
        scale_w = mc.scale_loss_weights if mc.encoder == "multiscale" else ()
        loss_fn = losses.LOSSES[cfg.loss]

        def pair_loss(q, a):
            return loss_fn(q.float(), a.float(), cfg.gamma) if cfg.loss == "triplet" else loss_fn(q.float(), a.float())

        scaler = torch.amp.GradScaler("cuda") if dev.type == "cuda" else None

        def save_state(epoch, batch, generator=None):
            tmp = state_path.with_name(STATE_NAME + ".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": epoch, "batch": batch, "best": best, "history": history,
                        "generator": None if generator is None else generator.get_state(),
                        "torch_rng": torch.get_rng_state()}, tmp)
            tmp.replace(state_path)

        t_start = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            batches = list(sampler.epoch(epoch))
            skip = start_batch if epoch == start_epoch else 0
            if skip and g_state is not None:
                g.set_state(g_state)
            bar = tqdm(batches[skip:], desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", disable=not self.progress,
                       initial=0)
            last_save, seen, t_epoch, run_loss = time.perf_counter(), 0, time.perf_counter(), 0.0
            for bi, idx in enumerate(bar, start=skip):
                idx = np.asarray(sorted(idx))
                B = len(idx)
                vg = int(torch.randint(cfg.variants, (1,), generator=g))
                va = int(torch.randint(cfg.variants, (1,), generator=g))
                frames = train.seq_frames[idx]  # [B, T]
                uniq, inv = np.unique(frames.ravel(), return_inverse=True)
                fg = torch.from_numpy(np.asarray(g_tr[vg, uniq], np.float32))[torch.from_numpy(inv)]
                fa = torch.from_numpy(np.asarray(a_tr[va, idx], np.float32))
                mirror = torch.rand(B, generator=g) < cfg.mirror_prob
                fg = fg.view(B, T, *fg.shape[1:])
                fg[mirror] = fg[mirror].flip(-1)
                fa[mirror] = fa[mirror].flip(-1)
                pad = sequence_dropout(B, T, cfg.seq_dropout, cfg.min_frames, g)
                fg, fa, pad = fg.flatten(0, 1).to(dev), fa.to(dev), pad.to(dev)
                with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                    if any(scale_w):  # hierarchical fusion: each scale's descriptor must match on its own too
                        (gd, ad), *scales = model.scale_outputs(fg, fa, B, T, pad)
                    else:
                        gd, ad, scales = model.fuse(model.frame_descriptors(fg, B, T), pad), \
                            model.aerial_from_trunk(fa), []
                    loss = pair_loss(gd, ad)
                    for w, (gs, as_) in zip(scale_w, scales):
                        loss = loss + w * pair_loss(gs, as_)
                    if use_cf:
                        lg = model.ground.agg.random_layouts(B * T, dev)
                        la = model.aerial.agg.random_layouts(B, dev)
                        gcf = model.fuse(model.frame_descriptors(fg, B, T, lg), pad)
                        acf = model.aerial_from_trunk(fa, la)
                        loss = loss + cfg.counterfactual_weight * losses.counterfactual(
                            gd.float(), ad.float(), gcf.float(), acf.float(), cfg.gamma) / 10.0
                opt.zero_grad(set_to_none=True)
                if scaler:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                seen += B
                run_loss = 0.9 * run_loss + 0.1 * loss.item() if bi > skip else loss.item()
                bar.set_postfix(loss=f"{run_loss:.3f}", seq_s=f"{seen / (time.perf_counter() - t_epoch):.1f}")
                if time.perf_counter() - last_save > cfg.save_every_s:
                    save_state(epoch, bi + 1, g)
                    last_save = time.perf_counter()
                if stop_after_s is not None and time.perf_counter() - t_start >= stop_after_s:
                    save_state(epoch, bi + 1, g)
                    bar.close()
                    print(f"train: paused at epoch {epoch + 1}, step {bi + 1}; rerun the same command to resume")
                    return {"paused": True, "checkpoint": None, "history": history,
                            "seconds": time.perf_counter() - t_start, "parameters": count_parameters(model),
                            "train_sequences": S}
            bar.close()
            entry = {"epoch": epoch + 1, "loss": run_loss, "seconds": time.perf_counter() - t_epoch}
            if val is not None:
                r = evaluate_cached(model, *val, device=dev)["T"]
                entry["val"] = r
                score = r["R@1"] + 0.01 * r.get("R@5", 0.0)
                if score > best:
                    best = score
                    save_checkpoint(self.out / "best.pt", model, extra=self._extra(command, history + [entry]))
            history.append(entry)
            (self.out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
            log.info("epoch %d: %s", epoch + 1, entry)
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {run_loss:.3f}" +
                  (f", val R@1 {entry['val']['R@1']:.1f} R@5 {entry['val'].get('R@5', float('nan')):.1f} "
                   f"hit@25m {entry['val']['hit@25m']:.1f}" if "val" in entry else ""))
            save_state(epoch + 1, 0)
            start_batch = 0
        save_checkpoint(self.out / "last.pt", model, extra=self._extra(command, history))
        final = self.out / ("best.pt" if (self.out / "best.pt").is_file() else "last.pt")
        return {"paused": False, "checkpoint": final, "history": history, "seconds": time.perf_counter() - t_start,
                "parameters": count_parameters(model), "train_sequences": S}

    def _extra(self, command: str, history: List[Dict]) -> Dict:
        return {"train": asdict(self.cfg), "data": str(self.data_root), "command": command,
                "history": history[-3:], "epochs_done": len(history),
                "init": None if self.init is None else str(self.init)}


def init_weights(model: CrossViewModel, checkpoint: Path) -> None:
    """Copy the weights of ``checkpoint`` into ``model``: every tensor must exist with the same shape
    (a two-stage preset differs from its first stage only in how it uses the weights)."""
    source, manifest = load_checkpoint(checkpoint)  # format and weights fingerprint checked there
    state = source.state_dict()
    mine = model.state_dict()
    bad = sorted(k for k in set(mine) | set(state) if k not in mine or k not in state or mine[k].shape != state[k].shape)
    if bad:
        raise IncompatibleArtifact(f"--init {checkpoint} (preset {manifest['preset']}) does not fit preset "
                                   f"{model.cfg.name}: {len(bad)} tensors differ, e.g. {', '.join(bad[:3])}")
    model.load_state_dict(state, strict=True)

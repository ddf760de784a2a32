"""Training of the learned metric matcher (``models.bevmatch``): NLL of the true pose over the whole
(x, y, heading) volume, resumable.

Each step draws a cached BEV mosaic (``training.metric_data``), a random prior around its true pose
(offset up to ``max_offset_m`` in x and y, heading up to ``max_yaw_offset_deg``), cuts the aerial
window around the prior as ``MetricMatcher.match`` does, applies independent photometric
augmentation to the BEV and the aerial, and scores the volume with ``bevmatch.torch_match_bev``
(the torch restatement of ``metric.correlate.match_bev``); the loss is ``volume_nll``.
Gradients are accumulated over ``batch`` samples (mosaics differ in size).

Run folder::

    OUT/last.pt (+ .json)   the latest weights (a bevmatch checkpoint)
    OUT/best.pt (+ .json)   the weights with the lowest validation NLL
    OUT/state.pt            optimizer, step, RNG, history: what resuming needs
    OUT/history.json        the curve (train loss per log interval, validation per eval) and the
                            condition presets of the samples (``training.metric_data``; [] = none)
    OUT/run.json            the settings (+ "presets" when the samples have some); a rerun with other
                            settings is refused without --force

Rerunning the same command resumes from OUT/state.pt (saved every ``save_every_s`` seconds and at
stop), so the process may die at any time and lose at most that much.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..core.errors import InvalidArgument, OutputExists
from ..metric.bev import BevGrid
from ..metric.correlate import canvas_for
from ..models.bevmatch import (
    BevMatchConfig,
    BevMatchModel,
    load_bevmatch,
    save_bevmatch,
    torch_match_bev,
    volume_nll,
    volume_target,
)
from .metric_data import Sample, list_samples, load_sample, read_sample_index, sample_presets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricTrainConfig:
    steps: int = 10000  # 40k samples at ~0.09 s each (2 threads, 2-core CPU, load ~2): ~1 h; <= 3 h shared 3x
    batch: int = 4  # samples per step (gradient accumulation)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    half_m: float = 12.0  # translation half-window of the training volume (m)
    max_offset_m: float = 10.0  # prior offset, uniform in +-this in x and y (m)
    max_yaw_offset_deg: float = 8.0  # prior heading offset, uniform in +-this (deg)
    yaw_half_deg: float = 10.0  # heading half-range of the volume (deg)
    yaw_step_deg: float = 2.0  # coarser than the matcher's 1 deg: the FFTs scale with the headings
    min_overlap: float = 0.6  # MetricParams.metric_min_overlap
    photometric: float = 1.0  # augmentation strength (0 = off)
    val_samples: int = 48
    val_every: int = 250
    log_every: int = 25
    save_every_s: float = 120.0
    seed: int = 0
    val_fraction: float = 0.1  # share of each world's drives kept for validation (at least one drive)
    model: Dict[str, Any] = field(default_factory=dict)  # BevMatchConfig overrides


def _erode(valid: np.ndarray, px: int = 2) -> np.ndarray:
    from ..metric.matcher import _erode as erode

    return erode(valid, px)


class AerialSource:
    """Aerial windows of the training worlds (their orthophotos paged into memory once)."""

    def __init__(self, worlds: Dict[str, str]):
        self.paths = dict(worlds)
        self._maps: Dict[str, Any] = {}
        self._mis: Dict[str, Any] = {}  # world.json per world (its survey's misregistration)

    def sample(self, path: Path, name: str) -> Sample:
        """A cached sample with its pose moved into the orthophoto's own frame: where the survey shows
        the vehicle (truth + the world's recorded misregistration, ``sim.survey``). The matcher can only
        find what the orthophoto shows; trained on the absolute truth instead, the pair learns the
        training towns' mean survey offset, which helps wherever a town happens to be shifted alike."""
        from ..sim.survey import misregistration_displacement
        from ..sim.world import read_world_manifest

        s = load_sample(path, name)
        if name not in self._mis:  # the world's manifest, read once
            self._mis[name] = read_world_manifest(Path(self.paths[name]))
        x, y, yaw = s.pose
        dx, dy = misregistration_displacement(self._mis[name], np.array([x]), np.array([y]))
        return replace(s, pose=(x + float(dx[0]), y + float(dy[0]), yaw))

    def map(self, name: str):
        if name not in self._maps:
            from ..metric.aerial import AerialMap
            from ..sim.world import World

            p = Path(self.paths[name])
            frame = World.load(p).frame
            self._maps[name] = AerialMap(p / "orthophoto.tif", frame, 0.5, memory_budget_mb=256.0)
        return self._maps[name]


def prior_window(sample: Sample, aerial, prior: Tuple[float, float, float], half_m: float):
    """(grid, aerial window, eroded valid) around ``prior`` exactly as ``MetricMatcher.match`` cuts them."""
    res, x_min, x_max, y_half = sample.grid
    gm = BevGrid(res, x_min, x_max, y_half)
    side, c0 = canvas_for(gm)
    half_px = int(math.ceil(half_m / res)) + side // 2 + 2
    x, y, yaw = prior
    win = aerial.window(x + math.cos(yaw) * c0[0], y + math.sin(yaw) * c0[0], half_px)
    return gm, win, _erode(win.valid)


def _photometric(img: np.ndarray, rng: np.random.Generator, strength: float, blur: bool) -> np.ndarray:
    """Brightness, contrast, per-channel gain, gamma, noise (and optionally blur) on an RGB float 0..255."""
    if strength <= 0:
        return img
    from ..metric.bev import _cv2

    s = strength
    x = img.astype(np.float32) / 255.0
    x = np.clip(x, 0, 1) ** float(np.exp(rng.normal(0, 0.2 * s)))
    m = x.mean()
    x = (x - m) * float(np.exp(rng.normal(0, 0.2 * s))) + m
    x = x * float(np.exp(rng.normal(0, 0.2 * s))) * np.exp(rng.normal(0, 0.06 * s, 3)).astype(np.float32)
    if blur and rng.random() < 0.5:
        x = _cv2().GaussianBlur(x, (0, 0), float(rng.uniform(0.3, 1.2)))
    x = x + rng.normal(0, 0.02 * s, x.shape).astype(np.float32)
    return np.clip(x * 255.0, 0, 255).astype(np.float32)


def bev_tensor(rgb: np.ndarray, valid: np.ndarray, range_m: np.ndarray) -> torch.Tensor:
    """[1, 5, h, w]: the same input the extractor feeds the exported graph (``metric.learned.bev_input``)."""
    from ..metric.learned import bev_input

    return torch.from_numpy(bev_input(rgb, valid, range_m))


def aerial_tensor(rgb: np.ndarray) -> torch.Tensor:
    from ..metric.learned import aerial_input

    return torch.from_numpy(aerial_input(rgb))


def draw_prior(pose: Tuple[float, float, float], rng: np.random.Generator,
               cfg: MetricTrainConfig) -> Tuple[float, float, float]:
    x, y, yaw = pose
    return (x + float(rng.uniform(-cfg.max_offset_m, cfg.max_offset_m)),
            y + float(rng.uniform(-cfg.max_offset_m, cfg.max_offset_m)),
            yaw + math.radians(float(rng.uniform(-cfg.max_yaw_offset_deg, cfg.max_yaw_offset_deg))))


def sample_loss(model: BevMatchModel, sample: Sample, aerial, prior, cfg: MetricTrainConfig,
                rng: Optional[np.random.Generator] = None) -> Tuple[torch.Tensor, Dict[str, float]]:
    """NLL of the true pose for one sample and prior; also the volume peak's errors."""
    gm, win, avalid = prior_window(sample, aerial, prior, cfg.half_m)
    bev_rgb, a_rgb = sample.rgb.astype(np.float32), win.rgb.astype(np.float32)
    if rng is not None:
        bev_rgb = _photometric(bev_rgb, rng, cfg.photometric, blur=False)
        a_rgb = _photometric(a_rgb, rng, cfg.photometric, blur=True)
    f, w = model.encode_bev(bev_tensor(bev_rgb, sample.valid, sample.range_m))
    a = model.encode_aerial(aerial_tensor(a_rgb))
    step = math.radians(cfg.yaw_step_deg)
    n = int(math.floor(math.radians(cfg.yaw_half_deg) / step + 1e-9))
    yaws = prior[2] + step * np.arange(-n, n + 1)
    vol = torch_match_bev(f[0], w[0], gm, yaws, a[0], torch.from_numpy(avalid), win.x_left, win.y_top,
                          min_overlap=cfg.min_overlap, crop=(prior[0], prior[1], cfg.half_m))
    x, y, yaw = sample.pose
    target = volume_target(vol, x, y, yaw)
    if not bool(vol.mask[target]):
        return None, {}
    loss = volume_nll(vol.scores, vol.mask, model.temperature, target)
    with torch.no_grad():
        s = torch.where(vol.mask, vol.scores, torch.full_like(vol.scores, -9.0))
        k, i, j = np.unravel_index(int(torch.argmax(s)), tuple(s.shape))
    ex, ey = float(vol.xs[j] - x), float(vol.ys[i] - y)
    lon = ex * math.cos(yaw) + ey * math.sin(yaw)
    lat = -ex * math.sin(yaw) + ey * math.cos(yaw)
    eyaw = math.degrees(math.remainder(float(vol.yaws[k]) - yaw, 2 * math.pi))
    return loss, {"lat": lat, "lon": lon, "yaw": eyaw}


def _split(files: Dict[str, List[Path]], frac: float) -> Tuple[List[Tuple[str, Path]], List[Tuple[str, Path]]]:
    """Per world: the last ceil(frac * drives) drives validate, the rest train (no keyframe in both)."""
    train, val = [], []
    for name, fs in sorted(files.items()):
        drives = sorted({f.parent.name for f in fs})
        n_val = max(1, int(math.ceil(frac * len(drives)))) if len(drives) > 1 else 0
        vd = set(drives[len(drives) - n_val:])
        for f in fs:
            (val if f.parent.name in vd else train).append((name, f))
    if not train:
        raise InvalidArgument("no training samples (synthesise drives first)")
    return train, val


def _recall(errs: List[Dict[str, float]]) -> Dict[str, float]:
    if not errs:
        return {}
    e = np.array([[d["lat"], d["lon"], d["yaw"]] for d in errs])
    out = {}
    for r in (1, 3):
        out[f"lat@{r}m"] = float(np.mean(np.abs(e[:, 0]) <= r) * 100)
        out[f"lon@{r}m"] = float(np.mean(np.abs(e[:, 1]) <= r) * 100)
        out[f"yaw@{r}deg"] = float(np.mean(np.abs(e[:, 2]) <= r) * 100)
    out["median_m"] = float(np.median(np.hypot(e[:, 0], e[:, 1])))
    return out


class MetricTrainer:
    def __init__(self, cache: Path, out: Path, cfg: MetricTrainConfig, *, force: bool = False,
                 init: Optional[Path] = None):
        self.cache, self.out, self.cfg = Path(cache), Path(out), cfg
        self.out.mkdir(parents=True, exist_ok=True)
        index = read_sample_index(self.cache)
        self.presets = sample_presets(self.cache)
        settings = {"cache": str(self.cache.resolve()), "train": asdict(cfg),
                    "init": str(Path(init).resolve()) if init is not None else None}
        if self.presets:  # absent on default samples: run folders made before presets resume as they were
            settings["presets"] = self.presets
        run = self.out / "run.json"
        if run.is_file() and not force:
            have = json.loads(run.read_text())
            if have != settings:
                raise OutputExists(f"{self.out} holds a run with other settings; pass --force to start over "
                                   f"(have {have['train']}, want {settings['train']})")
        if force:
            for name in ("state.pt", "last.pt", "last.json", "best.pt", "best.json", "history.json"):
                (self.out / name).unlink(missing_ok=True)
        run.write_text(json.dumps(settings, indent=2) + "\n")
        self.aerial = AerialSource({w["name"]: w["path"] for w in index["worlds"]})
        self.train_files, self.val_files = _split(list_samples(self.cache), cfg.val_fraction)
        torch.manual_seed(cfg.seed)
        self.model = BevMatchModel(BevMatchConfig.from_dict(cfg.model) if cfg.model else BevMatchConfig())
        if init is not None:
            self.model.load_state_dict(load_bevmatch(init)[0].state_dict())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: Dict[str, Any] = {"train": [], "val": [], "presets": self.presets}
        self.best = math.inf
        self.rng = np.random.default_rng(cfg.seed)
        self.elapsed_s = 0.0
        self._resume()
        # a fixed validation set: the same samples and priors at every evaluation
        vr = np.random.default_rng(12345)
        pick = vr.permutation(len(self.val_files))[:cfg.val_samples] if self.val_files else []
        self.val_set = [(self.val_files[i], draw_prior((0.0, 0.0, 0.0), vr, cfg)) for i in pick]

    def _resume(self) -> None:
        p = self.out / "state.pt"
        if not p.is_file():
            return
        st = torch.load(p, map_location="cpu", weights_only=False)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.history, self.best = st["step"], st["history"], st["best"]
        self.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        self.elapsed_s = float(st.get("elapsed_s", 0.0))
        self.history["presets"] = self.presets  # states saved before presets existed lack it
        log.info("resumed %s at step %d", self.out, self.step)

    def _save(self) -> None:
        tmp = self.out / "state.pt.tmp"
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "history": self.history, "best": self.best, "rng": self.rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "elapsed_s": self.elapsed_s}, tmp)
        tmp.replace(self.out / "state.pt")
        save_bevmatch(self.out / "last.pt", self.model, extra=self._extra())
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1) + "\n")

    def _extra(self) -> Dict:
        return {"training": {"step": self.step, "train_s": round(self.elapsed_s, 1), "cache": str(self.cache),
                             "worlds": sorted(self.aerial.paths), "presets": self.presets,
                             "target_frame": "orthophoto",
                             "config": asdict(self.cfg)}}

    def _lr(self) -> float:
        c = self.cfg
        if self.step < c.warmup_steps:
            return c.lr * (self.step + 1) / c.warmup_steps
        f = (self.step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        return c.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, f))))

    def evaluate(self) -> Dict[str, float]:
        self.model.eval()
        losses, errs = [], []
        with torch.no_grad():
            for (world, path), off in self.val_set:
                s = self.aerial.sample(path, world)
                x, y, yaw = s.pose
                prior = (x + off[0], y + off[1], yaw + off[2])
                loss, e = sample_loss(self.model, s, self.aerial.map(world), prior, self.cfg)
                if loss is not None:
                    losses.append(float(loss))
                    errs.append(e)
        self.model.train()
        return {"nll": float(np.mean(losses)) if losses else float("nan"), "n": len(losses), **_recall(errs)}

    def run(self, stop_after_s: Optional[float] = None, progress: bool = True) -> Dict[str, Any]:
        """Train until ``steps`` (or ``stop_after_s``); Ctrl-C saves the state before it stops."""
        try:
            return self._run(stop_after_s, progress)
        except KeyboardInterrupt:
            self._save()
            raise

    def _run(self, stop_after_s: Optional[float], progress: bool) -> Dict[str, Any]:
        from tqdm import tqdm

        c = self.cfg
        t_start = time.perf_counter()
        t_save = t_start
        base_s = self.elapsed_s
        self.model.train()
        bar = tqdm(total=c.steps, initial=self.step, unit="step", desc="train-metric", disable=not progress)
        run_loss, run_errs, paused = [], [], False
        if self.step == 0 and not self.history["val"] and self.val_set:
            self.history["val"].append({"step": 0, **self.evaluate()})
        while self.step < c.steps:
            for g in self.opt.param_groups:
                g["lr"] = self._lr()
            self.opt.zero_grad(set_to_none=True)
            n_ok = 0
            for _ in range(c.batch):
                world, path = self.train_files[int(self.rng.integers(len(self.train_files)))]
                s = self.aerial.sample(path, world)
                prior = draw_prior(s.pose, self.rng, c)
                loss, e = sample_loss(self.model, s, self.aerial.map(world), prior, c, self.rng)
                if loss is None or not torch.isfinite(loss):
                    continue
                (loss / c.batch).backward()
                run_loss.append(float(loss))
                run_errs.append(e)
                n_ok += 1
            if n_ok:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
                self.opt.step()
            self.step += 1
            now = time.perf_counter()
            self.elapsed_s = base_s + (now - t_start)
            bar.update(1)
            if self.step % c.log_every == 0 and run_loss:
                rec = _recall(run_errs)
                self.history["train"].append({"step": self.step, "loss": float(np.mean(run_loss)),
                                              "t_s": round(self.elapsed_s, 1),
                                              "temperature": float(self.model.temperature.detach()),
                                              "lat@1m": rec.get("lat@1m"), "lon@1m": rec.get("lon@1m")})
                bar.set_postfix(loss=f"{np.mean(run_loss):.2f}", T=f"{float(self.model.temperature):.3f}")
                run_loss, run_errs = [], []
            if (self.step % c.val_every == 0 or self.step == c.steps) and self.val_set:
                v = {"step": self.step, "t_s": round(self.elapsed_s, 1), **self.evaluate()}
                self.history["val"].append(v)
                log.info("step %d val %s", self.step, v)
                if v["nll"] < self.best:
                    self.best = v["nll"]
                    save_bevmatch(self.out / "best.pt", self.model, extra=self._extra())
            if now - t_save >= c.save_every_s:
                self._save()
                t_save = time.perf_counter()
            if stop_after_s is not None and time.perf_counter() - t_start >= stop_after_s:
                paused = self.step < c.steps
                break
        bar.close()
        self.elapsed_s = base_s + (time.perf_counter() - t_start)
        self._save()
        if not (self.out / "best.pt").is_file():
            save_bevmatch(self.out / "best.pt", self.model, extra=self._extra())
        return {"step": self.step, "paused": paused, "history": self.history, "best_nll": self.best,
                "train_samples": len(self.train_files), "val_samples": len(self.val_set),
                "elapsed_s": self.elapsed_s, "checkpoint": str(self.out / "best.pt")}

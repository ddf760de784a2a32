"""Training data: images of a dataset split, semantic augmentation, and the trunk-feature cache.

Training freezes the early backbone blocks (the trunk), so their feature maps are computed
once per image (and per augmentation variant) and cached on disk as float16 arrays; the
trainer then runs only the tail, aggregators and temporal fusion. Variant 0 is the clean
image; variants 1.. are seeded semantic augmentations (brightness, contrast, saturation,
blur, grayscale, posterize) drawn independently for the ground and the aerial view.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.dataset import SequenceRecord, read_manifest, read_split
from ..core.errors import IncompatibleArtifact, InvalidArgument

log = logging.getLogger(__name__)
CACHE_VERSION = 1


def load_image(path: Path, size) -> torch.Tensor:
    """RGB image file -> float [3, H, W] in [0, 1], resized (bilinear) to ``size`` = (H, W) if needed."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise IncompatibleArtifact(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0


def semantic_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Photometric augmentation of a batch [N, 3, H, W] in [0, 1], one random draw per image."""
    n = x.shape[0]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(n, 1, 1, 1, generator=g)

    x = x * u(0.6, 1.4)  # brightness
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - m) * u(0.6, 1.4) + m  # contrast
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = gray + (x - gray) * u(0.3, 1.6)  # saturation
    blur = torch.rand(n, generator=g) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
        xb = x[blur]
        c = xb.shape[1]
        xb = F.conv2d(F.pad(xb, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
        xb = F.conv2d(F.pad(xb, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)
        x[blur] = xb
    grey = torch.rand(n, generator=g) < 0.1
    if grey.any():
        x[grey] = x[grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    x = x.clamp(0.0, 1.0)
    post = torch.rand(n, generator=g) < 0.1
    if post.any():
        x[post] = torch.floor(x[post] * 8.0) / 8.0
    return x


@dataclass
class SplitData:
    """A split's sequences with integer indices into the cached ground frames and aerial tiles."""

    records: List[SequenceRecord]
    frame_paths: List[str]  # unique ground images
    seq_frames: np.ndarray  # [S, T] int indices into frame_paths
    xy: np.ndarray  # [S, 2] newest keyframe position (m, world frame)
    world: List[str]

    @classmethod
    def from_dataset(cls, root: Path, split: str, max_sequences: int = 0) -> "SplitData":
        recs = read_split(root, split)
        if not recs:
            raise InvalidArgument(f"{root}: split {split} is empty")
        if max_sequences and len(recs) > max_sequences:
            pick = np.random.default_rng(0).choice(len(recs), max_sequences, replace=False)
            recs = [recs[i] for i in sorted(pick)]
        index: Dict[str, int] = {}
        seq = []
        for r in recs:
            seq.append([index.setdefault(p, len(index)) for p in r.frame_paths])
        if len({len(s) for s in seq}) != 1:
            raise IncompatibleArtifact(f"{root}/{split}: sequences have different lengths")
        return cls(recs, list(index), np.asarray(seq, np.int64), np.array([[r.x, r.y] for r in recs]),
                   [r.world for r in recs])


def _encode_to_cache(branch, paths: Sequence[Path], size, out: Path, variants: int, seed: int, batch: int,
                     desc: str) -> np.ndarray:
    from tqdm import tqdm

    with torch.no_grad():
        probe = branch.trunk_features(torch.zeros(1, 3, *size))
    shape = (variants, len(paths)) + tuple(probe.shape[1:])
    tmp = out.with_name(out.name + ".tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    g = torch.Generator().manual_seed(seed)
    with tqdm(total=len(paths) * variants, desc=desc, unit="img") as bar:
        for i in range(0, len(paths), batch):
            imgs = torch.stack([load_image(p, size) for p in paths[i:i + batch]])
            for v in range(variants):
                x = imgs if v == 0 else semantic_augment(imgs.clone(), g)
                with torch.no_grad():
                    arr[v, i:i + len(imgs)] = branch.trunk_features(x).numpy().astype(np.float16)
                bar.update(len(imgs))
    arr.flush()
    del arr
    tmp.replace(out)
    return np.load(out, mmap_mode="r")


def cache_key(dataset_root: Path, split: str, cfg_dict: Dict, variants: int, max_sequences: int) -> str:
    m = read_manifest(dataset_root)
    trunk = {k: cfg_dict.get(k) for k in ("backbone", "freeze_blocks", "ground_size", "aerial_size", "aerial_view",
                                         "tile_m", "camera_hfov_deg", "camera_height_m")}
    blob = json.dumps({"dataset": str(Path(dataset_root).resolve()), "splits": m["splits"], "split": split,
                       "trunk": trunk, "variants": variants, "max": max_sequences, "v": CACHE_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_feature_cache(model, dataset_root: Path, split: str, cache_dir: Path, *, variants: int = 1,
                        seed: int = 0, batch: int = 32, max_sequences: int = 0):
    """Trunk features of a split: (SplitData, ground [V, F, C, h, w], aerial [V, S, C, h, w]) as memmaps.

    Reuses a complete cache with the same key (dataset, split, trunk, variants); writes to a
    temporary file and renames, so an interrupted build is redone, never read half-written.
    """
    cfg = model.cfg
    data = SplitData.from_dataset(dataset_root, split, max_sequences)
    key = cache_key(dataset_root, split, cfg.to_dict(), variants, max_sequences)
    d = Path(cache_dir) / f"{split}_{key}"
    d.mkdir(parents=True, exist_ok=True)
    gpath, apath = d / "ground.npy", d / "aerial.npy"
    root = Path(dataset_root)
    if gpath.is_file():
        ground = np.load(gpath, mmap_mode="r")
    else:
        ground = _encode_to_cache(model.ground, [root / p for p in data.frame_paths], cfg.ground_size, gpath,
                                  variants, seed, batch, f"cache {split} ground")
    if apath.is_file():
        aerial = np.load(apath, mmap_mode="r")
    else:
        aerial = _encode_to_cache(model.aerial, [root / r.aerial for r in data.records], cfg.aerial_size, apath,
                                  variants, seed + 1, batch, f"cache {split} aerial")
    return data, ground, aerial

"""``geoloc export parity-inputs``: real ground frames + aerial tiles for the ONNX parity check, saved
as .npz + manifest; and the readers behind `geoloc export onnx --parity-inputs SRC`.

SRC is a saved .npz, a geoloc dataset (frames and tiles), or a bag (a drive folder, a rosbag2
folder or a single .mcap/.db3: every 5th camera image; the aerial tiles then come from the shipped
fixture, since a bag holds no orthophoto). Without a source the pictures are rendered in a
generated town at a preset's input sizes: that is how the shipped fixture
(``geoloc_ros/weights/parity_inputs.npz``) is made.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

from .common import parse_with

if TYPE_CHECKING:
    import numpy as np

N_FRAMES = 8  # the longest sequence the parity check runs: max_frames of every shipped preset
N_TILES = 4
BAG_EVERY = 5  # every 5th camera image: consecutive, yet not near-duplicates at 30 Hz
CAMERA_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
SOURCE_HELP = ("a saved .npz (geoloc export parity-inputs), a dataset folder (frames + aerial tiles), or a bag: a "
               "drive folder, rosbag2 folder or .mcap/.db3 file (every 5th camera image; aerial tiles from the "
               "shipped fixture)")


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "parity-inputs", help="save real frames + aerial tiles for the ONNX parity check (.npz + manifest)",
        description=f"Write the pictures `geoloc export onnx` checks ONNX Runtime against PyTorch on: {N_FRAMES} "
                    f"consecutive ground frames and {N_TILES} heading-up aerial tiles (uint8 RGB) in OUT.npz, with "
                    "OUT.json (format geoloc-parity-inputs: shapes, sha256, source, command). From --source, or "
                    "rendered in a generated town at the input sizes of --preset (the shipped fixture "
                    "geoloc_ros/weights/parity_inputs.npz is made this way). Use the file with "
                    "`geoloc export onnx --parity-inputs OUT.npz`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output .npz (its manifest .json is written beside it)")
    p.add_argument("--source", type=Path, default=None, help=f"where the pictures come from: {SOURCE_HELP}; "
                                                             "default: rendered in a generated town")
    p.add_argument("--image-topic", default=None,
                   help="camera topic of a bag source (default /camera/image_raw, else the only camera topic)")
    p.add_argument("--preset", default="seqgeo_lite",
                   help="without --source: the preset whose image sizes, field of view and tile side are rendered")
    p.add_argument("--seed", type=int, default=11, help="without --source: the generated town's seed")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run_export_parity_inputs)
    return p


def bag_frames(bag: Path, n: int, *, every: int = BAG_EVERY, topic: Optional[str] = None) -> Tuple["np.ndarray", str]:
    """Every ``every``-th image of the bag's camera topic, the first ``n`` of them (uint8 RGB), and the topic."""
    import numpy as np

    from ..bag import bag_topics, read_bag
    from ..core.bagpath import resolve_bag
    from ..core.errors import InvalidArgument
    from ..core.images import msg_to_rgb
    from ..sim.bag import TOPIC_IMAGE

    path = resolve_bag(bag)
    topics = bag_topics(path)
    cams = sorted(k for k, (t, _) in topics.items() if t in CAMERA_TYPES)
    if topic is None:
        topic = TOPIC_IMAGE if TOPIC_IMAGE in cams else (cams[0] if len(cams) == 1 else None)
    if topic not in cams:
        raise InvalidArgument(f"bag {path}: " + (f"{topic} is not one of its camera topics" if topic else
                                                 "choose the camera topic with --image-topic")
                              + f" ({', '.join(cams) or 'it has none'})")
    imgs = []
    for i, (_, _, msg) in enumerate(read_bag(path, [topic])):
        if i % every == 0:
            imgs.append(msg_to_rgb(msg))
            if len(imgs) >= n:
                break
    if not imgs:
        raise InvalidArgument(f"bag {path}: no images on {topic}")
    return np.stack(imgs), topic


def _dataset_inputs(root: Path, n_frames: int, n_tiles: int):
    import numpy as np
    from PIL import Image

    from ..core.dataset import SPLITS, read_manifest, read_split
    from ..core.errors import IncompatibleArtifact
    from ..inference.parity_inputs import ParityInputs

    splits = [s for s in SPLITS if s in read_manifest(root).get("splits", {})]
    if not splits:
        raise IncompatibleArtifact(f"dataset {root} has no split to take parity inputs from")
    frames: List[str] = []
    tiles: List[str] = []
    for r in read_split(root, splits[0]):  # a sequence's frames, then the next (overlapping) sequence's new ones
        frames += [f for f in r.frame_paths if f not in frames]
        tiles.append(r.aerial)
        if len(frames) >= n_frames and len(tiles) >= n_tiles:
            break

    def load(rels: List[str]):
        return np.stack([np.asarray(Image.open(root / p).convert("RGB"), dtype=np.uint8) for p in rels])

    return ParityInputs(load(frames[:n_frames]), load(tiles[:n_tiles]),
                        source=f"dataset {root}, split {splits[0]}: first {min(n_frames, len(frames))} keyframes and "
                               f"{min(n_tiles, len(tiles))} aerial tiles")


def read_parity_source(src: Path, *, image_topic: Optional[str] = None, n_frames: int = N_FRAMES,
                       n_tiles: int = N_TILES):
    """``ParityInputs`` from a saved .npz, a dataset folder or a bag (see the module docstring)."""
    from ..inference.parity_inputs import ParityInputs, load_parity_inputs

    src = Path(src)
    if src.suffix == ".npz":
        return load_parity_inputs(src)
    if (src / "dataset.json").is_file():
        return _dataset_inputs(src, n_frames, n_tiles)
    frames, topic = bag_frames(src, n_frames, topic=image_topic)
    return ParityInputs(frames, load_parity_inputs().tiles[:n_tiles],
                        source=f"bag {src}: every {BAG_EVERY}th image of {topic}; aerial tiles of the shipped fixture")


def rendered_inputs(preset: str, seed: int = 11, n_frames: int = N_FRAMES, n_tiles: int = N_TILES):
    """Rendered in a generated town at ``preset``'s sizes (the shipped fixture: seqgeo_lite, seed 11)."""
    from ..inference.parity_inputs import ParityInputs
    from ..models.config import load_preset
    from ..sim.samples import synthetic_inputs

    frames, tiles = synthetic_inputs(load_preset(preset), n_frames=n_frames, n_tiles=n_tiles, seed=seed)
    return ParityInputs(frames, tiles, source=f"rendered: generated town seed {seed} (400 m, 0.5 m/px), "
                                              f"{n_frames} frames 5 m apart along its longest road and "
                                              f"{n_tiles} aerial tiles at those poses, preset {preset} sizes")


def run_export_parity_inputs(args: argparse.Namespace) -> Path:
    from ..core.errors import InvalidArgument
    from ..core.outputs import check_output_file
    from ..inference.parity_inputs import save_parity_inputs

    out = Path(args.out)
    if out.suffix != ".npz":
        raise InvalidArgument(f"--out {out} must be a .npz file")
    check_output_file(out, args.force)
    inputs = (read_parity_source(args.source, image_topic=args.image_topic) if args.source is not None
              else rendered_inputs(args.preset, args.seed))
    # the command as `geoloc export parity-inputs` takes it (sys.argv may be another program's, e.g. pytest)
    opts = (["--source", str(args.source)] + (["--image-topic", args.image_topic] if args.image_topic else [])
            if args.source is not None else ["--preset", args.preset, "--seed", str(args.seed)])
    cmd = " ".join(shlex.quote(a) for a in ["geoloc", "export", "parity-inputs", "--out", str(out), *opts]
                   + (["--force"] if args.force else []))
    m = save_parity_inputs(out, inputs, command=cmd)
    print(f"parity inputs: frames {m['frames']['shape']}, tiles {m['tiles']['shape']}, {m['bytes'] / 1e3:.0f} kB "
          f"-> {out} ({inputs.source})")
    return out


def main(argv: Optional[List[str]] = None) -> Path:
    return run_export_parity_inputs(parse_with(register, ["parity-inputs"] + list(argv or [])))

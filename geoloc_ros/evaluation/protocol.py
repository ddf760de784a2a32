"""The evaluation protocol (``bench/heldout.yaml``): which towns train, which choose, which are held out.

A town is a world seed of ``geoloc sim world``. Every tool that learns or chooses something from data
(``geoloc train``, ``geoloc train-metric``, ``geoloc eval calibrate``, ``bench/tune_*.py``) calls
``refuse_heldout`` with the seeds of the worlds it was given; a held-out town is refused with a message
that names the file. Worlds made outside the project (no seed in ``world.json``) are not towns of the
protocol and pass.

The file is found at ``$GEOLOC_PROTOCOL``, else in the source tree (``bench/heldout.yaml``), else where the
package installs it (``share/geoloc_ros/bench/heldout.yaml``).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from ..core.errors import InvalidArgument
from ..core.manifest import check_manifest

PROTOCOL_FORMAT = "geoloc-heldout-protocol"
PROTOCOL_VERSIONS = (1,)
ENV = "GEOLOC_PROTOCOL"


@dataclass(frozen=True)
class ProtocolDrive:
    town: int
    preset: str
    drive_seed: int
    gnss_seed: int
    duration_s: float

    @property
    def name(self) -> str:
        return f"t{self.town}_{self.preset}_d{self.drive_seed}_g{self.gnss_seed}_{self.duration_s:g}s"


@dataclass(frozen=True)
class Protocol:
    path: Path
    training: Tuple[int, ...]
    validation: Tuple[int, ...]
    heldout_towns: Tuple[int, ...]
    drives: Tuple[ProtocolDrive, ...]
    validation_drives: Tuple[ProtocolDrive, ...]
    world_size_m: float
    survey_gap: bool
    terrain: bool

    def role(self, town: int) -> Optional[str]:
        """'training', 'validation', 'heldout' or None (not a town of the protocol)."""
        for name in ("heldout_towns", "validation", "training"):
            if int(town) in getattr(self, name):
                return "heldout" if name == "heldout_towns" else name
        return None


def default_path() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "bench" / "heldout.yaml"
    if here.is_file():
        return here
    return Path(sys.prefix) / "share" / "geoloc_ros" / "bench" / "heldout.yaml"


def _drives(doc: dict, key: str, where: Path) -> Tuple[ProtocolDrive, ...]:
    from ..sim.conditions import PRESETS  # noqa: F401 - names only; evaluation may import sim

    dur = float((doc.get("drive_defaults") or {}).get("duration_s", 90.0))
    out: List[ProtocolDrive] = []
    for i, d in enumerate(doc.get(key) or []):
        extra = set(d) - {"town", "preset", "drive_seed", "gnss_seed", "duration_s"}
        if extra:
            raise InvalidArgument(f"{where}: {key}[{i}] has unknown keys {sorted(extra)}")
        if d.get("preset") not in PRESETS:
            raise InvalidArgument(f"{where}: {key}[{i}] preset {d.get('preset')!r} is not one of {', '.join(PRESETS)}")
        out.append(ProtocolDrive(int(d["town"]), str(d["preset"]), int(d["drive_seed"]), int(d["gnss_seed"]),
                                 float(d.get("duration_s", dur))))
    return tuple(out)


def load_protocol(path: Path | None = None) -> Protocol:
    """Read and check the protocol file: towns in one role each, drives in the towns of their role."""
    import yaml

    path = Path(path) if path is not None else default_path()
    if not path.is_file():
        raise InvalidArgument(f"the evaluation protocol {path} does not exist (set ${ENV} to its path)")
    doc = yaml.safe_load(path.read_text()) or {}
    check_manifest(doc, PROTOCOL_FORMAT, PROTOCOL_VERSIONS, source=path, what="evaluation protocol",
                   rebuild="restore bench/heldout.yaml from the repository")
    roles = {k: tuple(int(s) for s in doc.get(k) or ()) for k in ("training", "validation", "heldout_towns")}
    seen: dict = {}
    for k, towns in roles.items():
        for t in towns:
            if t in seen:
                raise InvalidArgument(f"{path}: town {t} is both {seen[t]} and {k}")
            seen[t] = k
    world = doc.get("world") or {}
    p = Protocol(path=path, training=roles["training"], validation=roles["validation"],
                 heldout_towns=roles["heldout_towns"], drives=_drives(doc, "drives", path),
                 validation_drives=_drives(doc, "validation_drives", path),
                 world_size_m=float(world.get("size_m", 800.0)), survey_gap=bool(world.get("survey_gap", True)),
                 terrain=bool(world.get("terrain", True)))
    for key, drives, towns in (("drives", p.drives, p.heldout_towns), ("validation_drives", p.validation_drives,
                                                                        p.validation)):
        for d in drives:
            if d.town not in towns:
                raise InvalidArgument(f"{path}: {key} has a drive in town {d.town}, which is not one of {towns}")
    names = [d.name for d in p.drives + p.validation_drives]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"{path}: two drives share town, preset and seeds")
    return p


def world_seed(world_dir: Path) -> Optional[int]:
    """The town (generator seed) of a world directory, or None for a world made outside the project."""
    meta = Path(world_dir) / "world.json"
    if not meta.is_file():
        return None
    seed = json.loads(meta.read_text()).get("seed")
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None


def refuse_heldout(towns: Iterable[Tuple[str, Optional[int]]], tool: str, *, protocol: Protocol | None = None) -> None:
    """Raise InvalidArgument if any (label, town) is a held-out town of the protocol.

    ``label`` names the input as the user gave it (a world folder, a bag) so the message says which.
    Without a protocol file the check cannot be made: that is an error too, never a silent pass.
    """
    p = protocol or load_protocol()
    bad = [(label, t) for label, t in towns if t is not None and p.role(t) == "heldout"]
    if bad:
        which = "; ".join(f"{label} (town {t})" for label, t in bad)
        raise InvalidArgument(
            f"{tool} refuses held-out towns of the evaluation protocol {p.path}: {which}. Nothing may be "
            f"trained, calibrated or tuned on them; use the training towns {list(p.training)} or the validation "
            f"towns {list(p.validation)}")


def towns_of_drives(bags: Sequence[Path]) -> List[Tuple[str, Optional[int]]]:
    """(bag, town) for drive folders or bags made by `geoloc sim drive` (drive.json's world seed)."""
    out = []
    for b in bags:
        b = Path(b)
        seed = None
        for cand in (b / "drive.json", b.parent / "drive.json", b.parent.parent / "drive.json"):
            if cand.is_file():
                w = json.loads(cand.read_text()).get("world") or {}
                s = w.get("seed")
                seed = int(s) if isinstance(s, int) and not isinstance(s, bool) else None
                break
        out.append((str(b), seed))
    return out

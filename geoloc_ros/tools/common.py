"""Small helpers shared by the offline tools."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from typing import Callable, List, Optional


def command_line() -> str:
    """The command that is running, for manifests (reproducibility)."""
    return " ".join(shlex.quote(a) for a in ["geoloc"] + sys.argv[1:]) if sys.argv else "geoloc"


def positive(kind: type = float, lo: float = 0.0, hi: float = math.inf, name: str = "value") -> Callable[[str], float]:
    """argparse type: a number in (lo, hi]."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {text!r}")
        if not (isinstance(v, int) or math.isfinite(v)) or not (lo < v <= hi):
            raise argparse.ArgumentTypeError(f"{name} must be in ({lo}, {hi}], got {text}")
        return v

    return parse


def seed_type(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be a non-negative integer, got {text!r}")
    if v < 0 or v >= 2 ** 63:
        raise argparse.ArgumentTypeError(f"seed must be in 0..2^63-1, got {text}")
    return v


def parse_with(register: Callable, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse ``argv`` with a parser holding only this tool (for ``main(argv)`` entry points)."""
    parser = argparse.ArgumentParser(prog="geoloc")
    register(parser.add_subparsers(dest="subcommand", required=True))
    return parser.parse_args(argv)


# ------------------------------------------------------------------- drive-time conditions (sim.conditions)
# option -> Conditions field; every option defaults to "not given" (argparse.SUPPRESS), so a preset's field
# is overridden only by an option the user typed
_CONDITION_OPTIONS = (("traffic", "traffic"), ("time_of_day", "time_of_day"), ("weather", "weather"),
                      ("road_changes", "road_changes"), ("calib_error", "calib"),
                      ("odom_scale_err", "odom_scale_err_pct"), ("gnss_overconfident", "gnss_overconfident"),
                      ("gnss_quality", "gnss_quality"))


def add_condition_args(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    """The drive-time condition options (one ``sim.conditions.Conditions``); ``many``: ``--conditions``
    takes ``all`` or a comma list of presets, cycled over the drives (``geoloc sim dataset``)."""
    from ..sim.conditions import GNSS_QUALITIES, PRESETS, TIMES_OF_DAY, WEATHERS

    s = argparse.SUPPRESS
    g = p.add_argument_group(
        "drive-time conditions", "The road and the sensors as they are on this drive (docs/data.md). All off by "
        "default; --conditions picks a preset, the other options override its fields.")
    if many:
        g.add_argument("--conditions", default=s, metavar="NAMES",
                       help=f"'all' or a comma list of presets ({', '.join(PRESETS)}), cycled over the drives")
    else:
        g.add_argument("--conditions", default=s, metavar="NAME", choices=list(PRESETS),
                       help=f"a preset: {', '.join(PRESETS)}")
    g.add_argument("--traffic", type=int, default=s, metavar="N", help="moving vehicles on the roads (0..500)")
    g.add_argument("--time-of-day", default=s, choices=TIMES_OF_DAY, help="light (default day)")
    g.add_argument("--weather", default=s, choices=WEATHERS, help="weather (default clear)")
    g.add_argument("--road-changes", type=float, default=s, metavar="F",
                   help="share of road markings changed since the survey (0..1)")
    g.add_argument("--calib-error", default=s, metavar="PITCH_DEG,YAW_DEG,ROLL_DEG,HEIGHT_M,FX_PCT",
                   help="error of the published camera calibration (/tf_static, camera_info) vs the camera "
                        "that renders; e.g. 1.5,0.5,0,0.05,1")
    g.add_argument("--odom-scale-err", type=float, default=s, metavar="PCT",
                   help="fixed wheel scale error in percent (instead of the drawn one), plus slip in hard braking")
    g.add_argument("--gnss-overconfident", type=float, default=s, metavar="F",
                   help="the receiver reports F x its real covariance (F < 1: over-confident)")
    g.add_argument("--gnss-quality", default=s, choices=GNSS_QUALITIES,
                   help="receiver environment: open-sky ~1-1.5 m, suburban ~3-5 m, urban 5-10 m median error")


def _condition_overrides(args: argparse.Namespace) -> dict:
    from ..sim.conditions import CalibError

    out = {}
    for opt, fld in _CONDITION_OPTIONS:
        if hasattr(args, opt):
            v = getattr(args, opt)
            out[fld] = CalibError.parse(v) if opt == "calib_error" else v
    return out


def conditions_from_args(args: argparse.Namespace):
    """The one ``Conditions`` of ``geoloc sim drive``: the ``--conditions`` preset (or the defaults) with
    the explicit options over it."""
    import dataclasses

    from ..sim.conditions import Conditions, preset

    base = preset(args.conditions) if hasattr(args, "conditions") else Conditions()
    return dataclasses.replace(base, **_condition_overrides(args))


def condition_cycle(args: argparse.Namespace):
    """``geoloc sim dataset``: [(name, Conditions)] cycled over the drives; None when no option was given
    (every drive as before). ``--conditions all`` is every preset; explicit options override each."""
    import dataclasses

    from ..core.errors import InvalidArgument
    from ..sim.conditions import PRESETS, Conditions, preset

    over = _condition_overrides(args)
    if not hasattr(args, "conditions"):
        return [("custom", Conditions(**over))] if over else None
    names = list(PRESETS) if args.conditions.strip() == "all" else [n.strip() for n in args.conditions.split(",")]
    if not all(names):
        raise InvalidArgument(f"--conditions {args.conditions!r}: give 'all' or a comma list of presets")
    return [(n if not over else f"{n}+custom", dataclasses.replace(preset(n), **over)) for n in names]

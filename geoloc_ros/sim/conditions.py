"""Drive-time conditions: the road as it is when the car drives, not when the survey flew.

Everything here changes what the camera sees and what the sensors report on one drive; the
orthophoto (``sim.survey``) stays the survey. Each field is off by default, and a drive made
with the default ``Conditions()`` is byte-identical to a drive made before this module existed.

``Conditions`` is the one record of a drive's conditions (``drive.json`` -> ``conditions``, with
the realisation of each random choice beside it); ``PRESETS`` names the combinations the held-out
protocol (``bench/heldout.yaml``) and the training export use.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping

from ..core.config import check_keys
from ..core.errors import InvalidArgument

TIMES_OF_DAY = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
GNSS_QUALITIES = ("default", "open-sky", "suburban", "urban")


@dataclass(frozen=True)
class CalibError:
    """Error of the PUBLISHED camera calibration relative to the camera that rendered the frames:
    published = true + error, pitch/yaw/roll in degrees (REP-103 camera_link: pitch > 0 means the
    published camera looks further down than the true one), height in metres, fx (and fy: a
    focal-length error) in percent. The frames use the true camera; /tf_static and camera_info carry
    the published one."""

    pitch_deg: float = 0.0
    yaw_deg: float = 0.0
    roll_deg: float = 0.0
    height_m: float = 0.0
    fx_pct: float = 0.0

    def __post_init__(self):
        for name, lim in (("pitch_deg", 10.0), ("yaw_deg", 10.0), ("roll_deg", 10.0), ("height_m", 1.0),
                          ("fx_pct", 20.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not (-lim <= float(v) <= lim):
                raise InvalidArgument(f"calib error {name} must be a number in [-{lim:g}, {lim:g}], got {v!r}")

    @classmethod
    def parse(cls, text: str) -> "CalibError":
        """``PITCH_DEG,YAW_DEG,ROLL_DEG,HEIGHT_M,FX_PCT`` (the ``--calib-error`` argument)."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 5:
            raise InvalidArgument(f"--calib-error wants PITCH_DEG,YAW_DEG,ROLL_DEG,HEIGHT_M,FX_PCT (5 numbers), "
                                  f"got {text!r}")
        try:
            return cls(*(float(p) for p in parts))
        except ValueError:
            raise InvalidArgument(f"--calib-error {text!r}: every field must be a number") from None


@dataclass(frozen=True)
class Conditions:
    """The drive-time world and sensors of one drive (see the module docstring).

    traffic: moving vehicles on the road network; time_of_day / weather: light and weather;
    road_changes: share of marking segments changed since the survey (plus new asphalt and one
    construction zone when > 0); calib: published vs true camera; odom_scale_err_pct: wheel scale
    error in percent (None: the odometry model's own draw); gnss_overconfident: the receiver
    reports this factor x its real covariance (1: honest); gnss_quality: receiver environment
    ("default" = today's receiver); load_pitch_max_deg: the static load pitch of the body, drawn
    per drive in [0, this] (0: none, today's drives).
    """

    traffic: int = 0
    time_of_day: str = "day"
    weather: str = "clear"
    road_changes: float = 0.0
    calib: CalibError = CalibError()
    odom_scale_err_pct: float | None = None
    gnss_overconfident: float = 1.0
    gnss_quality: str = "default"
    load_pitch_max_deg: float = 0.0

    def __post_init__(self):
        if isinstance(self.traffic, bool) or not isinstance(self.traffic, int) or not (0 <= self.traffic <= 500):
            raise InvalidArgument(f"traffic must be an integer number of vehicles in 0..500, got {self.traffic!r}")
        if self.time_of_day not in TIMES_OF_DAY:
            raise InvalidArgument(f"time of day {self.time_of_day!r} is not one of {', '.join(TIMES_OF_DAY)}")
        if self.weather not in WEATHERS:
            raise InvalidArgument(f"weather {self.weather!r} is not one of {', '.join(WEATHERS)}")
        if not (0.0 <= float(self.road_changes) <= 1.0):
            raise InvalidArgument(f"road changes {self.road_changes} must be a share in 0..1")
        if not isinstance(self.calib, CalibError):
            raise InvalidArgument(f"calib must be a CalibError, got {self.calib!r}")
        if self.odom_scale_err_pct is not None and not (-20.0 <= float(self.odom_scale_err_pct) <= 20.0):
            raise InvalidArgument(f"odometry scale error {self.odom_scale_err_pct} % is outside -20..20")
        if not (0.05 <= float(self.gnss_overconfident) <= 20.0):
            raise InvalidArgument(f"gnss overconfidence factor {self.gnss_overconfident} is outside 0.05..20")
        if self.gnss_quality not in GNSS_QUALITIES:
            raise InvalidArgument(f"gnss quality {self.gnss_quality!r} is not one of {', '.join(GNSS_QUALITIES)}")
        if not (0.0 <= float(self.load_pitch_max_deg) <= 5.0):
            raise InvalidArgument(f"load pitch {self.load_pitch_max_deg} deg is outside 0..5")

    @property
    def is_default(self) -> bool:
        return self == Conditions()

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Conditions":
        check_keys(cls, d, "conditions")
        d = dict(d)
        if "calib" in d and not isinstance(d["calib"], CalibError):
            check_keys(CalibError, d["calib"], "conditions.calib")
            d["calib"] = CalibError(**d["calib"])
        return cls(**d)


def _preset(**kw) -> Conditions:
    return Conditions(load_pitch_max_deg=1.0, **kw)


MISCALIBRATION = CalibError(pitch_deg=1.5, yaw_deg=0.5, roll_deg=0.0, height_m=0.05, fx_pct=1.0)

# The named combinations (``--conditions NAME``). Every preset, `clear` included, draws a load pitch
# (0-1 deg) per drive: that is the road as it is; a drive with no --conditions stays today's bytes.
PRESETS: Dict[str, Conditions] = {
    "clear": _preset(),
    "busy": _preset(traffic=40),
    "dusk-rain": _preset(time_of_day="dusk", weather="rain", traffic=10),
    "night": _preset(time_of_day="night", traffic=10),
    "fog": _preset(weather="fog", traffic=10),
    "changed-road": _preset(road_changes=0.2),
    "miscalibrated": _preset(calib=MISCALIBRATION),
    "urban-gnss": _preset(gnss_quality="urban", gnss_overconfident=0.5, odom_scale_err_pct=2.0),
    "worst": _preset(traffic=40, time_of_day="night", weather="rain", road_changes=0.2, calib=MISCALIBRATION,
                     gnss_quality="urban", gnss_overconfident=0.5, odom_scale_err_pct=2.0),
}


def preset(name: str) -> Conditions:
    """The named preset; a wrong name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidArgument(f"unknown conditions preset {name!r}; valid: {', '.join(PRESETS)}") from None


"""What the camera is matched against, loaded once, and the Localizer built on it.

    m = load_measurements(config, orthophoto="ortho.tif")                # metric matching alone
    m = load_measurements(config, index_path="index/", model="seqgeo_lite")  # retrieval alone
    loc = build_localizer(config, m)

The node, the replay (``evaluation.replay``), ``eval calibrate`` and the demo all go through here.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import InvalidArgument
from ..metric.config import DEFAULT_FEATURES

log = logging.getLogger(__name__)


@dataclass
class Measurements:
    """The camera's measurements: ``matcher`` (metric matching on an orthophoto) and/or ``encoder``
    + ``index`` (retrieval: the camera measurement without an orthophoto, else relocalisation);
    ``frame``: the map frame (the index datum, else the orthophoto's or the one given)."""

    encoder: Any = None
    index: Any = None
    matcher: Any = None
    frame: Any = None

    def describe(self) -> str:
        parts = []
        if self.matcher is not None:
            fx = getattr(self.matcher.fx, "describe", None)
            parts.append(f"metric matching on {getattr(self.matcher.aerial.imagery, 'path', 'the orthophoto')}"
                         + (f" ({fx()})" if fx else ""))
        if self.index is not None:
            parts.append(f"retrieval on {getattr(self.index, 'path', 'the tile index')}")
        return " and ".join(parts) or "no camera measurement"


def load_measurements(config, *, orthophoto: Optional[Path] = None, index_path: Optional[Path] = None,
                      model: Optional[str] = None, backend: str = "auto", device: str = "cpu",
                      threads: Optional[int] = None, engines_dir: Optional[str] = None,
                      features: str = DEFAULT_FEATURES, memory_budget_mb: Optional[float] = None, frame=None,
                      encoder=None) -> Measurements:
    """Open the orthophoto (metric matching) and/or the tile index with its model (retrieval).
    Either alone is a valid configuration; neither is an InvalidArgument saying what to set, as is
    a path that does not exist. ``encoder``: an already loaded one (for the index). ``frame``: the
    map frame when there is no index (default: the orthophoto's centre). ``memory_budget_mb``: of
    the index's loaded shards and of the orthophoto's paged blocks (default: each one's own)."""
    op = Path(orthophoto).expanduser() if orthophoto else None
    ip = Path(index_path).expanduser() if index_path else None
    if op is None and ip is None:
        raise InvalidArgument("nothing to match the camera against: set orthophoto (metric matching: a GeoTIFF or "
                              "XYZ folder of the area) and/or index_path (retrieval: a tile index built with "
                              "`geoloc index build`)")
    if op is not None and not op.exists():
        raise InvalidArgument(f"orthophoto {op} does not exist; set it to the GeoTIFF (or XYZ folder) of the area, or "
                              f"leave it empty for retrieval only")
    m = Measurements(frame=frame)
    if ip is not None:
        if not ip.exists():
            raise InvalidArgument(f"index_path {ip} does not exist; build a tile index with `geoloc index build` and "
                                  f"set index_path to its folder")
        from ..index import TileIndex

        if encoder is None:
            if not model:
                raise InvalidArgument("a tile index needs the model it was built with (model)")
            from ..inference import load_encoder

            encoder = load_encoder(model, backend=backend, device=device, threads=threads or None,
                                   engines_dir=engines_dir or None)
        m.encoder = encoder
        budget = {} if memory_budget_mb is None else {"memory_budget_mb": memory_budget_mb}
        m.index = TileIndex.open(ip, expect_model=encoder.identity, **budget)
        m.frame = m.index.frame
    if op is not None:
        from ..metric import open_matcher

        budget = {} if memory_budget_mb is None else {"memory_budget_mb": memory_budget_mb}
        if features == "learned":  # the pair takes the same backend choice and engines folder as the encoder
            budget.update(backend=backend, threads=threads or None,
                          **({"engines_dir": engines_dir} if engines_dir else {}))
        m.matcher = open_matcher(op, config, frame=m.frame, features=features, **budget)
        m.frame = m.matcher.aerial.frame
    return m


def build_localizer(config=None, measurements: Optional[Measurements] = None, *, encoder=None, index=None,
                    matcher=None, frame=None):
    """The Localizer on ``measurements`` (or the ``encoder``, ``index``, ``matcher`` given one by one);
    ``config``: LocalizerConfig, a mapping of its fields, or None (defaults)."""
    from ..pipeline import Localizer

    if measurements is not None:
        encoder, index, matcher = measurements.encoder, measurements.index, measurements.matcher
        frame = frame if frame is not None else measurements.frame
    return Localizer(encoder, index, config, matcher=matcher, frame=frame)


def build_baseline(localizer):
    """The GNSS + odometry baseline of ``localizer``: the same filter and map frame, no camera."""
    from ..pipeline import Localizer

    return Localizer(localizer.encoder, localizer.index, dataclasses.replace(localizer.config, use_camera=False),
                     frame=localizer.frame)

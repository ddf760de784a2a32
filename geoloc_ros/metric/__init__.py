"""Metric matching: the camera's sub-metre measurement (numpy + OpenCV; no torch, no rclpy).

bev.py        camera model (camera_info K/D, /tf_static mounting) and ground-plane projection
aerial.py     north-up aerial windows around a position, paged from the orthophoto (LRU budget)
features.py   feature extractors behind one interface: gradient (non-learned), learned (CNN pair)
correlate.py  FFT correlation over (x, y, heading) -> score volume
matcher.py    keyframe sequence -> local BEV mosaic (odometry) -> fused -> score volume
config.py     MetricParams (part of LocalizerConfig: ROS parameters localizer.metric_*)
selfcal.py    MountCalibrator: online self-calibration of the camera mounting from the matches
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from .config import DEFAULT_FEATURES


def open_matcher(ortho: Union[str, Path], params=None, *, frame=None, features: str = DEFAULT_FEATURES,
                 memory_budget_mb: float = 64.0, selfcal=None, **feature_kw):
    """A ``MetricMatcher`` over an orthophoto (GeoTIFF or XYZ folder). ``frame``: the map frame
    (default: a LocalFrame at the imagery's centre); ``params``: MetricParams or LocalizerConfig;
    ``features``: extractor name (``features.EXTRACTORS``). The camera model is set later
    (``set_camera``: camera_info + mounting). ``selfcal``: a ``selfcal.MountCalibrator`` (mounting
    self-calibration); by default one is made when ``params.camera_selfcal`` is set (loaded from
    ``params.camera_selfcal_file`` when that exists)."""
    from ..core.geo import LocalFrame
    from ..index.imagery import open_imagery
    from .aerial import AerialMap
    from .config import MetricParams
    from .features import make_extractor
    from .matcher import MetricMatcher

    params = params if params is not None else MetricParams()
    imagery = open_imagery(ortho)
    if frame is None:
        lat0, lon0, lat1, lon1 = imagery.bounds_latlon()
        frame = LocalFrame.at(0.5 * (lat0 + lat1), 0.5 * (lon0 + lon1))
    aerial = AerialMap(imagery, frame, params.metric_res_m, memory_budget_mb=memory_budget_mb)
    if selfcal is None and getattr(params, "camera_selfcal", False):
        from .selfcal import SelfCalParams, load_or_new

        selfcal = load_or_new(params.camera_selfcal_file or None, SelfCalParams.from_config(params))
    if features == "learned":  # its TensorRT engines' profile follows the matching geometry
        feature_kw.setdefault("metric_params", params)
    return MetricMatcher(aerial, make_extractor(features, **feature_kw), params, selfcal=selfcal)

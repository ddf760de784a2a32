"""Parameters of metric matching (``MetricParams``); ``pipeline.LocalizerConfig`` extends it, so
each is a ROS parameter ``localizer.<name>`` too. Numpy-free; no torch, no rclpy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core.config import param as _f
from ..core.config import validate_fields
from ..core.errors import InvalidArgument

FUSIONS = ("attention", "mean", "single")
FEATURES = ("gradient", "learned")  # the metric feature extractors (metric.features.make_extractor)
# what every tool and the node use unless told otherwise: the learned pair (weights/bevmatch.pt) won the held-out
# matrix of bench/heldout.yaml against gradients on errors in 7 of 9 cells (docs/metric.md, "The two feature extractors")
DEFAULT_FEATURES = "learned"


@dataclass(frozen=True)
class MetricParams:
    _owner: ClassVar[str] = "metric"
    _group: ClassVar[str] = "metric"

    metric_res_m: float = _f(0.5, "metric matching: BEV and aerial resolution (m per pixel)", 0.1, 2.0)
    metric_bev_x_min_m: float = _f(3.0, "BEV starts this far ahead of base_link (m)", 0.0, 50.0)
    metric_bev_x_max_m: float = _f(33.0, "... and ends this far ahead (m)", 2.0, 200.0)
    metric_bev_y_half_m: float = _f(15.0, "BEV half-width to each side (m)", 1.0, 100.0)
    metric_max_range_m: float = _f(35.0, "ground farther than this from the camera is not projected (m)", 2.0, 500.0)
    metric_seq_len: int = _f(4, "keyframes placed into the local BEV mosaic with odometry (1: single frame)", 1, 16)
    metric_fusion: str = _f("attention", "how the views of the mosaic are fused per cell: attention (softmax over "
                            "the views' ground resolution), mean (plain average) or single (newest view only)",
                            choices=FUSIONS)
    metric_attention_range_m: float = _f(6.0, "attention temperature: a view 1 x this farther from a cell gets e^-1 "
                                         "of the weight (m)", 0.1, 1000.0)
    metric_window_sigma_k: float = _f(3.0, "translation window: this many position sigmas of the prior ...", 0.5, 20.0)
    metric_window_min_m: float = _f(8.0, "... clamped to at least this half-size (m)", 1.0, 200.0)
    metric_window_max_m: float = _f(30.0, "... and at most this half-size (m)", 1.0, 200.0)
    metric_yaw_sigma_k: float = _f(3.0, "heading window: this many heading sigmas of the prior ...", 0.5, 20.0)
    metric_yaw_min_deg: float = _f(3.0, "... clamped to at least +- this (deg)", 0.0, 180.0)
    metric_yaw_max_deg: float = _f(12.0, "... and at most +- this (deg)", 0.0, 180.0)
    metric_yaw_step_deg: float = _f(1.0, "heading step of the volume (deg)", 0.1, 10.0)
    metric_min_overlap: float = _f(0.6, "translations where less than this share of the BEV weight falls on valid "
                                   "imagery are not scored", 0.0, 1.0)
    metric_pitch_search_deg: float = _f(0.0, "also try road-plane pitch corrections of +- this (deg; 0: off) and keep "
                                        "the best-scoring (grade changes ahead)", 0.0, 10.0)

    def __post_init__(self):
        validate_fields(self, self._owner)
        check_metric(self)


def check_metric(p) -> None:
    """Cross-field checks (shared with LocalizerConfig)."""
    if p.metric_bev_x_min_m >= p.metric_bev_x_max_m:
        raise InvalidArgument(f"localizer.metric_bev_x_min_m ({p.metric_bev_x_min_m}) must be below "
                              f"metric_bev_x_max_m ({p.metric_bev_x_max_m})")
    if p.metric_window_min_m > p.metric_window_max_m:
        raise InvalidArgument(f"localizer.metric_window_min_m ({p.metric_window_min_m}) must not exceed "
                              f"metric_window_max_m ({p.metric_window_max_m})")
    if p.metric_yaw_min_deg > p.metric_yaw_max_deg:
        raise InvalidArgument(f"localizer.metric_yaw_min_deg ({p.metric_yaw_min_deg}) must not exceed "
                              f"metric_yaw_max_deg ({p.metric_yaw_max_deg})")

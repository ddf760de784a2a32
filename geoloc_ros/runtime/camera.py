"""The camera model metric matching projects with: camera_info (K, D, size) + the mounting."""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InvalidArgument


def mount_from_param(values: Optional[Sequence[float]]) -> Optional[Tuple[np.ndarray, Tuple[float, ...]]]:
    """(R, t) of the optical frame in base_link from ``[x, y, z, roll, pitch, yaw]`` (m, deg; pitch > 0
    looks down), as the node's ``camera_mount`` and ``--camera-mount`` give it; None for None or []."""
    if values is None or len(values) == 0:
        return None
    if len(values) != 6 or not all(math.isfinite(float(v)) for v in values):
        raise InvalidArgument(f"camera mounting must be six finite numbers x, y, z (m), roll, pitch, yaw (deg), "
                              f"got {list(values)}")
    from ..metric.bev import CameraModel

    x, y, z, r, p, w = (float(v) for v in values)
    return CameraModel.mount_from_rpy(x, y, z, math.radians(r), math.radians(p), math.radians(w))


def camera_model(info, static_tfs: List[Any], camera_mount, base_frame: str):
    """-> (CameraModel, where the mounting came from). ``info``: ``msgconv.CameraInfoSample``;
    the mounting is the /tf_static chain ``base_frame`` -> the camera_info frame when the
    transforms connect them, else ``camera_mount`` ((R, t)); with neither: InvalidArgument
    saying what to set (a guessed mounting costs metres)."""
    from ..metric.bev import CameraModel, mount_from_transforms

    mount = mount_from_transforms(static_tfs, base_frame, info.frame_id) if static_tfs else None
    source = f"/tf_static {base_frame} -> {info.frame_id}"
    if mount is None:
        mount, source = camera_mount, "camera_mount"
    if mount is None:
        raise InvalidArgument(f"no transform {base_frame} -> {info.frame_id} in /tf_static and no camera mounting "
                              f"given: set camera_mount (x, y, z, roll, pitch, yaw of the camera in {base_frame}; "
                              f"node parameter camera_mount, replay --camera-mount)")
    return CameraModel.from_camera_info(info.width, info.height, info.K, info.D).with_mount(*mount), source


def mount_to_param(R_base_opt, t_base_opt) -> List[float]:
    """The inverse of ``mount_from_param``: (R, t) of the optical frame in base_link -> ``[x, y, z, roll,
    pitch, yaw]`` (m, deg) of camera_link, what ``camera_mount`` takes."""
    from ..metric.bev import R_LINK_OPTICAL

    R = np.asarray(R_base_opt, float).reshape(3, 3) @ R_LINK_OPTICAL.T
    pitch = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    roll, yaw = math.atan2(R[2, 1], R[2, 2]), math.atan2(R[1, 0], R[0, 0])
    return [float(v) for v in t_base_opt] + [math.degrees(roll), math.degrees(pitch), math.degrees(yaw)]

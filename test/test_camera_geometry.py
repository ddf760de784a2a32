"""The rendered camera and what the bag tells a ROS consumer about it (CameraInfo K, /tf_static) agree:
known 3-D ground lines land where K and the mounting project them, to a tenth of a pixel."""
from __future__ import annotations

import math

import numpy as np
import pytest
from _geometry import crossing, quat_matrix

from geoloc_ros.bag import read_bag
from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.sim.bag import TOPIC_CAMERA_INFO, TOPIC_TF_STATIC, write_drive
from geoloc_ros.sim.drive import DriveConfig, simulate_drive
from geoloc_ros.sim.render import Appearance, GroundRenderer
from geoloc_ros.sim.world import Buildings, Sem, make_toy_world

CAM = PinholeCamera(width=256, height=128, hfov_deg=90.0)
DARK, BRIGHT = 60, 200


@pytest.fixture(scope="module")
def bag_camera(tmp_path_factory):
    """K and the base_link -> camera_optical_frame transform read back from a written drive bag."""
    toy = make_toy_world()
    sim = simulate_drive(toy, DriveConfig(duration_s=0.2, seed=0))
    out = tmp_path_factory.mktemp("bag") / "drive"
    write_drive(out, toy, sim, CAM, GroundRenderer(toy, CAM, Appearance(parked_car_density=0.0)).render)
    K, chain = None, {}
    for topic, _, msg in read_bag(out / "bag", [TOPIC_CAMERA_INFO, TOPIC_TF_STATIC]):
        if topic == TOPIC_CAMERA_INFO and K is None:
            K = np.asarray(msg.k, float).reshape(3, 3)
        elif topic == TOPIC_TF_STATIC:
            for tf in msg.transforms:
                t, r = tf.transform.translation, tf.transform.rotation
                chain[tf.child_frame_id] = (tf.header.frame_id, np.array([t.x, t.y, t.z]),
                                            quat_matrix((r.x, r.y, r.z, r.w)))
    # compose base_link <- camera_link <- camera_optical_frame
    parent, t1, R1 = chain["camera_link"]
    assert parent == "base_link" and chain["camera_optical_frame"][0] == "camera_link"
    _, t2, R2 = chain["camera_optical_frame"]
    return K, R1 @ R2, R1 @ t2 + t1


def project(points_world: np.ndarray, pose, bag_camera) -> np.ndarray:
    """[N, 3] world points -> [N, 2] (u, v) through base_link pose (x, y, yaw), /tf_static and K."""
    K, R_bo, t_bo = bag_camera
    x, y, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    R_wb = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    p_b = (points_world - np.array([x, y, 0.0])) @ R_wb  # R_wb^T (p - t)
    p_o = (p_b - t_bo) @ R_bo
    uvw = p_o @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def edge_world(axis: int, at: float) -> "object":
    """Flat toy world (no buildings or trees) whose albedo steps from DARK to BRIGHT where coordinate
    ``axis`` (0: x, 1: y) crosses ``at`` (on a pixel boundary; 1 m pixels so the ramp spans pixels)."""
    w = make_toy_world(size_m=200.0, gsd_m=1.0)
    n = w.meta.shape[0]
    g = w.meta.gsd_m
    X, Y = np.meshgrid(w.meta.x_min + (np.arange(n) + 0.5) * g, w.meta.y_max - (np.arange(n) + 0.5) * g)
    coord = X if axis == 0 else Y
    w.albedo = np.where((coord >= at)[..., None], BRIGHT, DARK).astype(np.uint8).repeat(3, axis=2)
    w.ortho = w.albedo
    w.height = np.zeros((n, n), np.float32)
    w.semantic = np.full((n, n), Sem.ROAD, np.uint8)
    w.object_id = np.zeros((n, n), np.int32)
    w.buildings = Buildings.empty()
    return w


def test_renderer_and_bag_intrinsics_agree_on_columns(bag_camera):
    """A ground line x = 3 m running ahead of the car: per image row, the rendered step lies on the column
    where the bag's K and /tf_static project the line (cx = (W-1)/2: pixel centres at integers)."""
    K, _, _ = bag_camera
    assert K[0, 2] == pytest.approx((CAM.width - 1) / 2) and K[1, 2] == pytest.approx((CAM.height - 1) / 2)
    w = edge_world(0, 3.0)
    pose = (1.0, 0.0, math.pi / 2)  # looking north, the line 2 m to the right
    img = GroundRenderer(w, CAM, Appearance(parked_car_density=0.0)).render(*pose).astype(float).mean(axis=2)
    errs = []
    for v in range(int(CAM.cy) + 10, CAM.height):
        fwd = CAM.fy * CAM.mount_height_m / (v - CAM.cy)
        half = int(CAM.fx / fwd) + 6  # the 1 m bilinear ramp spans fx / fwd columns
        if fwd < 5.0:
            continue
        line = project(np.array([[3.0, fwd - 0.5, 0.0], [3.0, fwd + 0.5, 0.0]]), pose, bag_camera)
        u_k = np.interp(v, line[:, 1][::-1], line[:, 0][::-1]) if line[0, 1] > line[1, 1] else \
            np.interp(v, line[:, 1], line[:, 0])
        u0 = int(u_k) - half
        errs.append(u0 + crossing(img[v, u0:u0 + 2 * half + 1]) - u_k)
    errs = np.array(errs)
    assert len(errs) > 15
    assert abs(np.median(errs)) < 0.1, np.median(errs)
    assert np.percentile(np.abs(errs), 90) < 0.6  # single rows: uint8 and sensor noise


def test_renderer_and_bag_intrinsics_agree_on_rows(bag_camera):
    """A ground line y = 6 m across the view: per column, the rendered step lies on the row where K projects it."""
    w = edge_world(1, 6.0)
    pose = (0.0, 0.0, math.pi / 2)
    img = GroundRenderer(w, CAM, Appearance(parked_car_density=0.0)).render(*pose).astype(float).mean(axis=2)
    line = project(np.array([[-3.0, 6.0, 0.0], [3.0, 6.0, 0.0]]), pose, bag_camera)
    errs = []
    for u in range(int(CAM.cx) - 40, int(CAM.cx) + 40):
        v_k = np.interp(u, line[:, 0], line[:, 1])
        v0 = int(v_k) - 10
        prof = img[v0:v0 + 21, u][::-1]  # bottom (near, dark: y < 6) to top (far, bright)
        errs.append((v0 + 20 - crossing(prof)) - v_k)
    errs = np.array(errs)
    assert abs(np.median(errs)) < 0.1, np.median(errs)
    assert np.percentile(np.abs(errs), 90) < 0.6  # single rows: uint8 and sensor noise

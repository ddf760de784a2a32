"""Terrain and attitude: a drive on a slope renders what camera_info (K, D), /tf_static and the published
attitude project, and the IMU's specific force is the trajectory's acceleration plus gravity."""
from __future__ import annotations

import math

import numpy as np
import pytest
from _geometry import crossing, quat_matrix

from geoloc_ros.bag import read_bag
from geoloc_ros.core.camera import PinholeCamera
from geoloc_ros.core.images import msg_to_rgb
from geoloc_ros.sim.bag import TOPIC_CAMERA_INFO, TOPIC_IMAGE, TOPIC_IMU, TOPIC_TF_STATIC, read_truth_csv, stamp_ns, write_drive
from geoloc_ros.sim.drive import GRAVITY, DriveConfig, ImuModel, rotation_rpy, simulate_drive
from geoloc_ros.sim.render import Appearance, GroundRenderer, SensorModel
from geoloc_ros.sim.terrain import Terrain
from geoloc_ros.sim.world import Buildings, Sem, make_toy_world

STRIPE_M = 4.0  # albedo steps DARK <-> BRIGHT at every x = 4 k metres
# one long diagonal wave: grades up to 6 %, so the car pitches and rolls on every road of the toy town
SLOPE = Terrain(((0.06 * 400.0 / (2 * math.pi), 2 * math.pi / 400.0 * math.cos(0.6),
                  2 * math.pi / 400.0 * math.sin(0.6), 0.4),))


def sloped_striped_world():
    w = make_toy_world(size_m=200.0, gsd_m=1.0)
    n = w.meta.shape[0]
    g = w.meta.gsd_m
    X, _ = np.meshgrid(w.meta.x_min + (np.arange(n) + 0.5) * g, w.meta.y_max - (np.arange(n) + 0.5) * g)
    bright = np.mod(np.floor(X / STRIPE_M), 2) == 0
    w.albedo = np.where(bright[..., None], 200, 60).astype(np.uint8).repeat(3, axis=2)
    w.ortho = w.albedo
    w.height = np.zeros((n, n), np.float32)
    w.semantic = np.full((n, n), Sem.ROAD, np.uint8)
    w.object_id = np.zeros((n, n), np.int32)
    w.buildings = Buildings.empty()
    w.elevation = SLOPE.raster(w.meta)
    w.terrain = SLOPE.to_dict()
    return w


def euler(q):
    """(roll, pitch, yaw) of a (x, y, z, w) quaternion, R = Rz(yaw) Ry(pitch) Rx(roll)."""
    R = quat_matrix(q)
    return math.atan2(R[2, 1], R[2, 2]), -math.asin(R[2, 0]), math.atan2(R[1, 0], R[0, 0])


def read_drive(out):
    K = D = None
    chain, imu = {}, {}
    for topic, t_ns, msg in read_bag(out / "bag", [TOPIC_CAMERA_INFO, TOPIC_TF_STATIC, TOPIC_IMU]):
        if topic == TOPIC_CAMERA_INFO and K is None:
            K, D = np.asarray(msg.k, float).reshape(3, 3), np.asarray(msg.d, float)
        elif topic == TOPIC_TF_STATIC:
            for tf in msg.transforms:
                t, r = tf.transform.translation, tf.transform.rotation
                chain[tf.child_frame_id] = (np.array([t.x, t.y, t.z]), quat_matrix((r.x, r.y, r.z, r.w)))
        elif topic == TOPIC_IMU:
            imu[t_ns] = msg
    t1, R1 = chain["camera_link"]
    t2, R2 = chain["camera_optical_frame"]
    return K, D, (R1 @ R2, R1 @ t2 + t1), imu


@pytest.fixture(scope="module", params=["pinhole", "plumb_bob"])
def slope_drive(request, tmp_path_factory):
    world = sloped_striped_world()
    dist = (0.0,) * 5 if request.param == "pinhole" else (-0.25, 0.06, 0.001, -0.0015, 0.0)
    cam = PinholeCamera(width=256, height=128, hfov_deg=90.0, distortion=dist)
    cfg = DriveConfig(duration_s=6.0, seed=4, imu=ImuModel(tilt_sigma_deg=0.0))
    sim = simulate_drive(world, cfg)
    out = tmp_path_factory.mktemp("slope") / request.param
    r = GroundRenderer(world, cam, Appearance(parked_car_density=0.0, seed=1), sensor=SensorModel())
    write_drive(out, world, sim, cam, r.render)
    return world, cam, sim, out


def project(P, truth_k, rp, bag):
    """World points [N, 3] -> pixels through the base_link pose (truth x, y, z, yaw; published roll,
    pitch), /tf_static and camera_info (K, plumb_bob D)."""
    K, D, (R_bo, t_bo), _ = bag
    x, y, z, yaw = truth_k
    R_wb = rotation_rpy(rp[0], rp[1], yaw)
    p_o = ((P - np.array([x, y, z])) @ R_wb - t_bo) @ R_bo
    xn, yn = p_o[:, 0] / p_o[:, 2], p_o[:, 1] / p_o[:, 2]
    k1, k2, p1, p2, k3 = D
    r2 = xn * xn + yn * yn
    rad = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 ** 3
    xd = xn * rad + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn)
    yd = yn * rad + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn
    return np.stack([K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=1), p_o[:, 2]


def test_rendered_slope_matches_projection_through_camera_info_tf_static_and_attitude(slope_drive):
    """Stripe edges x = 4 k on the sloped ground, projected with the published roll/pitch (IMU orientation),
    the truth position and yaw, /tf_static and K/D, lie on the rendered edges to 0.5 px."""
    world, cam, sim, out = slope_drive
    bag = read_drive(out)
    truth = read_truth_csv(out / "truth.csv")
    assert np.ptp(truth["pitch"]) > 0.005 and np.abs(truth["roll"]).max() > 0.01, "the car must tilt"
    images = [msg_to_rgb(m) for _, _, m in read_bag(out / "bag", [TOPIC_IMAGE])]
    errs = []
    for k in range(0, len(images), 3):
        yaw = truth["yaw"][k]
        if abs(math.sin(yaw)) < 0.9:  # stripes run north-south: look along them
            continue
        q = bag[3][int(truth["stamp_ns"][k])].orientation
        roll, pitch, _ = euler((q.x, q.y, q.z, q.w))
        img = images[k].astype(float).mean(axis=2)
        pose = (truth["x"][k], truth["y"][k], truth["z"][k], yaw)
        for xl in np.arange(-12.0, 13.0, STRIPE_M) + STRIPE_M * np.round(truth["x"][k] / STRIPE_M):
            ys = truth["y"][k] + math.copysign(1.0, math.sin(yaw)) * np.linspace(4.0, 20.0, 400)
            P = np.stack([np.full_like(ys, xl), ys, SLOPE.elevation(np.full_like(ys, xl), ys)], axis=1)
            uv, depth = project(P, pose, (roll, pitch), bag)
            for v in range(int(cam.cy) + 8, cam.height - 2):
                j = np.argmin(np.abs(uv[:, 1] - v))
                if abs(uv[j, 1] - v) > 0.3:
                    continue
                u_k = uv[j, 0] + (v - uv[j, 1]) * np.gradient(uv[:, 0], uv[:, 1])[j]
                half = int(1.2 * cam.fx / depth[j]) + 3
                u0 = int(round(u_k)) - half
                if u0 < 0 or u0 + 2 * half >= cam.width:
                    continue
                errs.append(u0 + crossing(img[v, u0:u0 + 2 * half + 1]) - u_k)
    errs = np.array(errs)
    assert len(errs) > 100, len(errs)
    assert abs(np.median(errs)) < 0.25, np.median(errs)
    assert np.median(np.abs(errs)) < 0.5, np.median(np.abs(errs))


def test_imu_specific_force_is_trajectory_acceleration_plus_gravity(slope_drive):
    """The published linear_acceleration, rotated with the published roll/pitch and the true yaw, equals the
    acceleration of the truth position (x, y and the terrain z, second differences) plus gravity."""
    world, cam, sim, out = slope_drive
    *_, imu = read_drive(out)
    tr = sim.truth
    z = SLOPE.elevation(tr.x, tr.y)
    dt = tr.t[1] - tr.t[0]
    pos = np.stack([tr.x, tr.y, z], axis=1)
    # second difference over +-2 samples (the truth is a polyline resampled at 100 Hz: one-sample
    # differences see its vertices); acc[k - 2] is at tr.t[k]
    acc = (pos[4:] - 2 * pos[2:-2] + pos[:-4]) / (2 * dt) ** 2
    errs, mags = [], []
    for k in range(5, len(tr.t) - 5, 7):
        msg = imu.get(stamp_ns(tr.t[k]))
        if msg is None:
            continue
        q = msg.orientation
        roll, pitch, _ = euler((q.x, q.y, q.z, q.w))
        f_body = np.array([msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z])
        f_world = rotation_rpy(roll, pitch, tr.yaw[k]) @ f_body
        errs.append(f_world - (acc[k - 2] + np.array([0.0, 0.0, GRAVITY])))
        mags.append(np.linalg.norm(f_body))
    errs = np.array(errs)
    assert len(errs) > 40
    assert np.all(np.abs(np.median(errs, axis=0)) < 0.05), np.median(errs, axis=0)
    assert np.percentile(np.linalg.norm(errs, axis=1), 95) < 0.2
    assert 9.3 < np.median(mags) < 10.3
    # the slope shows: gravity has a forward/sideways body component of several tenths of m/s^2
    fx = [imu[s].linear_acceleration.x for s in sorted(imu)]
    assert np.ptp(fx) > 0.3

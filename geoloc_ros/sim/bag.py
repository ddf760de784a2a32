"""Write a simulated drive as a rosbag2 (MCAP or sqlite3), plus its manifest and ground truth.

No ROS install is needed: messages are built and CDR-serialised with ``rosbags`` (type store
``Stores.ROS2_HUMBLE``), so any ROS 2 distribution, Foxglove or the ``mcap`` tools read them. This
module holds what is particular to drives (topics, message builders, timing, truth CSV); the
generic writer and the reader are ``geoloc_ros.bag``.

Output layout of ``write_drive(out, ...)``::

    OUT/bag/            rosbag2 directory (metadata.yaml + bag.mcap | bag.db3), metadata v8
    OUT/drive.json      manifest: config, world provenance, appearance, camera, rig, topics,
                        counts, statistics, tool version, command line, file checksums
    OUT/truth.csv       one row per camera frame: t, stamp_ns, x, y, yaw, lat, lon, speed, z, pitch,
                        roll (+ load_pitch under non-default conditions)

Topics (stamps are simulation time: ``EPOCH_NS`` + t; each message's bag timestamp equals its
header stamp; messages are written in time order):

==============================  ==========================  =====================  ==========
topic                           type                        frame_id (child)       rate
==============================  ==========================  =====================  ==========
``/camera/image_raw``           sensor_msgs/Image rgb8      camera_optical_frame   camera_hz
``/camera/image_raw/compressed`` sensor_msgs/CompressedImage camera_optical_frame   camera_hz
                                (jpeg; only if compressed)
``/camera/camera_info``         sensor_msgs/CameraInfo      camera_optical_frame   camera_hz
``/gnss/fix``                   sensor_msgs/NavSatFix       gnss_link              gnss_hz
``/gnss/fix_truth``             sensor_msgs/NavSatFix       gnss_link              gnss_hz
``/odom``                       nav_msgs/Odometry           odom (base_link)       odom_hz
``/tf``                         tf2_msgs/TFMessage          odom -> base_link      odom_hz
``/tf_static``                  tf2_msgs/TFMessage          base_link -> camera_link   once, t0
                                (transient local)           -> camera_optical_frame;
                                                            base_link -> gnss_link
==============================  ==========================  =====================  ==========

Conventions:

* Positions come from the world's local frame (UTM grid, see ``core.geo``); latitude and
  longitude are ``world.meta.frame.to_latlon`` of them (WGS84), altitude is ellipsoidal.
* Yaw (odom pose, /tf) is the local-frame yaw: radians CCW from grid east (ENU-like, REP-103).
  UTM grid convergence is IGNORED everywhere (grid east is treated as east); use
  ``LocalFrame.grid_convergence_deg`` to convert to true headings if needed.
* ``/gnss/fix``: status FIX with ``position_covariance_type`` DIAGONAL_KNOWN and the
  receiver's honest nominal variances [E, N, U]; during outages status NO_FIX, NaN position,
  type UNKNOWN (see ``sim.drive.GnssModel``; multipath is not reflected in the covariance).
  ``/gnss/fix_truth``: the true antenna position, DIAGONAL_KNOWN with zero variance (exact).
* ``/odom``: dead-reckoned, odom frame = pose at t = 0. Pose covariance diag
  [s_pos^2, s_pos^2, 1e6, 1e6, 1e6, s_yaw^2] (1e6: z, roll, pitch not estimated; planar);
  twist covariance diag [s_v^2, 1e-4, 1e6, 1e6, 1e6, s_w^2] in base_link.
* ``camera_optical_frame``: z forward, x right, y down (REP-103 optical convention).
* Drive-time conditions (``sim.conditions``, ``sim.sensors``): the frames come from the TRUE camera;
  /tf_static base_link -> camera_link and camera_info carry the PUBLISHED one (true + the
  calibration error); drive.json gets ``conditions`` and ``realisation`` (absent: the defaults).
"""
from __future__ import annotations

import csv
import heapq
import io
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..bag import BAG_VERSION, BagWriter, TopicSpec, header, typestore
from ..core.camera import PinholeCamera
from ..core.errors import IncompatibleArtifact, InvalidArgument
from ..core.manifest import read_manifest, sha256_file
from ..core.outputs import prepare_output_dir
from .drive import STATUS_FIX, STATUS_NO_FIX, DriveSim
from .world import World

log = logging.getLogger(__name__)

DRIVE_FORMAT = "geoloc-drive"
DRIVE_FORMAT_VERSION = 2  # v2: /imu/data, attitude in /odom and /tf, truth z/pitch/roll, survey_gap, camera D + sensor
READABLE_DRIVE_VERSIONS = (1, 2)  # what reads drive.json (world, camera, topics) is in both
EPOCH_NS = 1_700_000_000 * 10 ** 9  # sim time 0 (2023-11-14T22:13:20Z): fixed, so runs are deterministic

FRAME_BASE = "base_link"
FRAME_ODOM = "odom"
FRAME_CAMERA = "camera_link"
FRAME_OPTICAL = "camera_optical_frame"
FRAME_GNSS = "gnss_link"
FRAME_IMU = "imu_link"
# camera_link (x fwd, y left, z up) -> camera_optical_frame (z fwd, x right, y down), (x, y, z, w)
OPTICAL_QUAT = (-0.5, 0.5, -0.5, 0.5)

TOPIC_IMAGE = "/camera/image_raw"
TOPIC_COMPRESSED = "/camera/image_raw/compressed"
TOPIC_CAMERA_INFO = "/camera/camera_info"
TOPIC_FIX = "/gnss/fix"
TOPIC_FIX_TRUTH = "/gnss/fix_truth"
TOPIC_ODOM = "/odom"
TOPIC_TF = "/tf"
TOPIC_TF_STATIC = "/tf_static"
TOPIC_IMU = "/imu/data"

COMPRESSED_FORMAT = "rgb8; jpeg compressed bgr8"  # what compressed_image_transport writes for JPEG
TRUTH_COLUMNS = ("t", "stamp_ns", "x", "y", "yaw", "lat", "lon", "speed", "z", "pitch", "roll")
# appended on drives made under non-default conditions (sim.conditions): the static load pitch (REP-103
# radians, part of ``pitch``; <= 0: a loaded car sits nose up)
TRUTH_CONDITIONS_COLUMNS = ("load_pitch",)


def drive_topics(compressed: bool) -> List[TopicSpec]:
    """Topics of a drive bag, in the order their connections are created."""
    t = [TopicSpec(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", FRAME_BASE, "sensor mounting (static)", True),
         TopicSpec(TOPIC_TF, "tf2_msgs/msg/TFMessage", FRAME_ODOM, "odom -> base_link (dead reckoning)"),
         TopicSpec(TOPIC_ODOM, "nav_msgs/msg/Odometry", FRAME_ODOM, "wheel + gyro odometry, child base_link"),
         TopicSpec(TOPIC_IMU, "sensor_msgs/msg/Imu", FRAME_IMU, "IMU: roll/pitch + odom yaw, body rates, specific force"),
         TopicSpec(TOPIC_FIX, "sensor_msgs/msg/NavSatFix", FRAME_GNSS, "simulated GNSS receiver"),
         TopicSpec(TOPIC_FIX_TRUTH, "sensor_msgs/msg/NavSatFix", FRAME_GNSS, "true antenna position"),
         TopicSpec(TOPIC_IMAGE, "sensor_msgs/msg/Image", FRAME_OPTICAL, "rendered camera frame, rgb8")]
    if compressed:
        t.append(TopicSpec(TOPIC_COMPRESSED, "sensor_msgs/msg/CompressedImage", FRAME_OPTICAL,
                           "the same frame, JPEG"))
    t.append(TopicSpec(TOPIC_CAMERA_INFO, "sensor_msgs/msg/CameraInfo", FRAME_OPTICAL, "pinhole intrinsics"))
    return t


def stamp_ns(t: float) -> int:
    """Simulation time (s since drive start) -> bag/header time (ns since the Unix epoch)."""
    return EPOCH_NS + int(round(float(t) * 1e9))


def yaw_quat(yaw: float) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about +z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def rpy_quat(roll: float, pitch: float, yaw: float) -> Tuple[float, float, float, float]:
    """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll) (REP-103 roll, pitch, yaw)."""
    if roll == 0.0 and pitch == 0.0:
        return yaw_quat(yaw)
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy)


# ---------------------------------------------------------------------------------------
# messages


class _Msgs:
    """Builders for the message types of a drive bag (rosbags dataclasses)."""

    def __init__(self, ts):
        self.ts = ts
        T = ts.types
        self.Image = T["sensor_msgs/msg/Image"]
        self.CompressedImage = T["sensor_msgs/msg/CompressedImage"]
        self.CameraInfo = T["sensor_msgs/msg/CameraInfo"]
        self.RegionOfInterest = T["sensor_msgs/msg/RegionOfInterest"]
        self.NavSatFix = T["sensor_msgs/msg/NavSatFix"]
        self.NavSatStatus = T["sensor_msgs/msg/NavSatStatus"]
        self.Odometry = T["nav_msgs/msg/Odometry"]
        self.PoseWithCovariance = T["geometry_msgs/msg/PoseWithCovariance"]
        self.TwistWithCovariance = T["geometry_msgs/msg/TwistWithCovariance"]
        self.Pose = T["geometry_msgs/msg/Pose"]
        self.Twist = T["geometry_msgs/msg/Twist"]
        self.Point = T["geometry_msgs/msg/Point"]
        self.Vector3 = T["geometry_msgs/msg/Vector3"]
        self.Quaternion = T["geometry_msgs/msg/Quaternion"]
        self.Transform = T["geometry_msgs/msg/Transform"]
        self.TransformStamped = T["geometry_msgs/msg/TransformStamped"]
        self.TFMessage = T["tf2_msgs/msg/TFMessage"]
        self.Imu = T["sensor_msgs/msg/Imu"]

    def header(self, t_ns: int, frame_id: str):
        return header(self.ts, t_ns, frame_id)

    def quat(self, q):
        return self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))

    def transform(self, t_ns, parent, child, xyz, q):
        return self.TransformStamped(
            header=self.header(t_ns, parent), child_frame_id=child,
            transform=self.Transform(translation=self.Vector3(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
                                     rotation=self.quat(q)))

    def image(self, t_ns: int, img: np.ndarray):
        h, w = img.shape[:2]
        return self.Image(header=self.header(t_ns, FRAME_OPTICAL), height=h, width=w, encoding="rgb8",
                          is_bigendian=0, step=3 * w, data=np.ascontiguousarray(img, np.uint8).reshape(-1))

    def compressed(self, t_ns: int, img: np.ndarray, quality: int):
        from PIL import Image as PILImage

        buf = io.BytesIO()
        PILImage.fromarray(np.ascontiguousarray(img, np.uint8), "RGB").save(buf, format="JPEG", quality=int(quality))
        return self.CompressedImage(header=self.header(t_ns, FRAME_OPTICAL), format=COMPRESSED_FORMAT,
                                    data=np.frombuffer(buf.getvalue(), np.uint8))

    def camera_info(self, t_ns: int, camera: PinholeCamera, K: Optional[np.ndarray] = None):
        K = camera.K if K is None else np.asarray(K, float)
        P = np.hstack([K, np.zeros((3, 1))])
        return self.CameraInfo(header=self.header(t_ns, FRAME_OPTICAL), height=camera.height, width=camera.width,
                               distortion_model="plumb_bob", d=camera.D, k=K.reshape(-1).astype(float),
                               r=np.eye(3).reshape(-1), p=P.reshape(-1).astype(float), binning_x=0, binning_y=0,
                               roi=self.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False))

    def navsatfix(self, t_ns: int, lat: float, lon: float, alt: float, var_h: float, var_v: float, fix: bool):
        status = self.NavSatStatus(status=STATUS_FIX if fix else STATUS_NO_FIX,
                                   service=self.NavSatStatus.SERVICE_GPS)
        cov = np.zeros(9)
        if fix:
            cov[[0, 4, 8]] = (var_h, var_h, var_v)
            ctype = self.NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
        else:
            ctype = self.NavSatFix.COVARIANCE_TYPE_UNKNOWN
        return self.NavSatFix(header=self.header(t_ns, FRAME_GNSS), status=status, latitude=float(lat),
                              longitude=float(lon), altitude=float(alt), position_covariance=cov,
                              position_covariance_type=ctype)

    def imu(self, t_ns, rpy, gyro, accel, tilt_var, yaw_var, gyro_var, accel_var):
        oc = np.diag([tilt_var, tilt_var, yaw_var]).reshape(-1)
        return self.Imu(header=self.header(t_ns, FRAME_IMU), orientation=self.quat(rpy_quat(*(float(v) for v in rpy))),
                        orientation_covariance=oc,
                        angular_velocity=self.Vector3(x=float(gyro[0]), y=float(gyro[1]), z=float(gyro[2])),
                        angular_velocity_covariance=np.diag([gyro_var] * 3).reshape(-1),
                        linear_acceleration=self.Vector3(x=float(accel[0]), y=float(accel[1]), z=float(accel[2])),
                        linear_acceleration_covariance=np.diag([accel_var] * 3).reshape(-1))

    def odometry(self, t_ns, x, y, yaw, v, w, pos_var, yaw_var, v_var, w_var, roll=0.0, pitch=0.0, tilt_var=1e6):
        pc = np.zeros(36)
        pc[[0, 7, 14, 21, 28, 35]] = (pos_var, pos_var, 1e6, tilt_var, tilt_var, yaw_var)
        tc = np.zeros(36)
        tc[[0, 7, 14, 21, 28, 35]] = (v_var, 1e-4, 1e6, 1e6, 1e6, w_var)
        pose = self.Pose(position=self.Point(x=float(x), y=float(y), z=0.0),
                         orientation=self.quat(rpy_quat(float(roll), float(pitch), float(yaw))))
        twist = self.Twist(linear=self.Vector3(x=float(v), y=0.0, z=0.0),
                           angular=self.Vector3(x=0.0, y=0.0, z=float(w)))
        return self.Odometry(header=self.header(t_ns, FRAME_ODOM), child_frame_id=FRAME_BASE,
                             pose=self.PoseWithCovariance(pose=pose, covariance=pc),
                             twist=self.TwistWithCovariance(twist=twist, covariance=tc))


# ---------------------------------------------------------------------------------------
# drive -> bag

FrameSource = Union[Callable[[float, float, float], np.ndarray], Iterable[np.ndarray]]
# priority of topics that share a timestamp (lower first)
_PRIO = {TOPIC_TF_STATIC: 0, TOPIC_TF: 1, TOPIC_ODOM: 2, TOPIC_IMU: 2.5, TOPIC_FIX: 3, TOPIC_FIX_TRUTH: 4, TOPIC_IMAGE: 5,
         TOPIC_COMPRESSED: 6, TOPIC_CAMERA_INFO: 7}


@dataclass
class BagSummary:
    path: Path
    storage: str
    counts: Dict[str, int]
    payload_bytes: int
    size_bytes: int
    seconds: float

    @property
    def frames(self) -> int:
        return self.counts.get(TOPIC_IMAGE, 0)


def camera_poses(sim: DriveSim, mount_height_m: float = 0.0) -> Tuple[np.ndarray, ...]:
    """(x, y, yaw, z, pitch, roll) of camera_link at each frame time: base_link pose and attitude
    composed with the mounting (camera_x_m ahead, ``mount_height_m`` above base_link, no rotation).
    z is above the terrain datum; flat and level: (x + off cos yaw, y + off sin yaw, yaw, mount, 0, 0)."""
    from .drive import rotation_rpy

    st = sim.truth.at(sim.camera_t)
    off = sim.config.rig.camera_x_m
    if sim.attitude is None:
        n = len(sim.camera_t)
        return (st.x + off * np.cos(st.yaw), st.y + off * np.sin(st.yaw), st.yaw, np.full(n, mount_height_m),
                np.zeros(n), np.zeros(n))
    z, pitch, roll = sim.attitude.at(sim.camera_t)
    if not (np.any(pitch) or np.any(roll)):
        return st.x + off * np.cos(st.yaw), st.y + off * np.sin(st.yaw), st.yaw, z + mount_height_m, pitch, roll
    R = rotation_rpy(roll, pitch, st.yaw)
    p = np.stack([st.x, st.y, z], axis=1) + R @ np.array([off, 0.0, mount_height_m])
    return p[:, 0], p[:, 1], st.yaw, p[:, 2], pitch, roll


def _latlon(frame, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    lat = np.full(len(x), np.nan)
    lon = np.full(len(x), np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.any():
        a, b = frame.to_latlon(x[ok], y[ok])
        lat[ok], lon[ok] = a, b
    return lat, lon


def _takes_time(fn) -> bool:
    """Whether a frame callable takes ``t=`` (a ``t`` parameter or ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == "t" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
               for p in params)


def true_camera(sim: DriveSim, camera: PinholeCamera):
    """``sim.sensors.CameraMount`` of the camera that renders the frames."""
    from .sensors import true_mount

    return true_mount(camera, sim.config.rig.camera_x_m)


def published_camera(sim: DriveSim, camera: PinholeCamera):
    """``sim.sensors.CameraMount`` that /tf_static and camera_info publish: the true one plus the
    calibration error of the drive's conditions."""
    from .conditions import CalibError
    from .sensors import published_mount

    calib = sim.conditions.calib if sim.conditions is not None else CalibError()
    return published_mount(true_camera(sim, camera), calib)


def write_drive_bag(bag_dir: Path, sim: DriveSim, camera: PinholeCamera, frames: FrameSource, frame, *,
                    progress: bool = False) -> BagSummary:
    """Write the rosbag2 of ``sim`` to ``bag_dir`` (must not exist).

    ``frames`` gives the images, streamed one at a time in frame order: either a callable
    ``render(x, y, yaw[, z=, pitch=, roll=]) -> uint8 [H, W, 3]`` called with the TRUE camera pose of
    each frame (and ``t=`` seconds since the start when it takes a ``t`` parameter or ``**kwargs``),
    or an iterable of such arrays (one per ``sim.camera_t``). ``frame`` is the world's
    ``LocalFrame`` (for latitude/longitude). /tf_static and camera_info carry the PUBLISHED camera
    (``published_camera``: the true one plus ``sim.conditions.calib``).
    """
    from tqdm import tqdm

    cfg = sim.config
    t0 = time.perf_counter()
    topics = drive_topics(cfg.compressed)
    m = _Msgs(typestore())
    rig = cfg.rig
    pub = published_camera(sim, camera)
    cam_q = (0.0, 0.0, 0.0, 1.0) if pub.level else rpy_quat(*pub.rpy_rad)
    cam_K = None if (pub.fx, pub.fy) == (camera.fx, camera.fy) else np.array(
        [[pub.fx, 0.0, camera.cx], [0.0, pub.fy, camera.cy], [0.0, 0.0, 1.0]])

    def static_stream() -> Iterator:
        t_ns = stamp_ns(0.0)
        tfs = [m.transform(t_ns, FRAME_BASE, FRAME_CAMERA, (pub.x, pub.y, pub.z), cam_q),
               m.transform(t_ns, FRAME_CAMERA, FRAME_OPTICAL, (0.0, 0.0, 0.0), OPTICAL_QUAT),
               m.transform(t_ns, FRAME_BASE, FRAME_GNSS, (rig.gnss_x_m, 0.0, rig.gnss_z_m), (0.0, 0.0, 0.0, 1.0)),
               m.transform(t_ns, FRAME_BASE, FRAME_IMU, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))]
        yield t_ns, _PRIO[TOPIC_TF_STATIC], TOPIC_TF_STATIC, m.TFMessage(transforms=tfs)

    imu = sim.imu
    if imu is not None:  # roll and pitch of the odometry pose come from the IMU's tilt estimate
        o_roll = np.interp(sim.odom.t, imu.t, imu.orientation_rpy[:, 0])
        o_pitch = np.interp(sim.odom.t, imu.t, imu.orientation_rpy[:, 1])
        tilt_var = imu.tilt_sigma ** 2
    else:
        o_roll = o_pitch = np.zeros(len(sim.odom.t))
        tilt_var = 1e6

    def odom_stream() -> Iterator:
        o = sim.odom
        for k in range(len(o.t)):
            t_ns = stamp_ns(o.t[k])
            yaw = float(math.atan2(math.sin(o.yaw[k]), math.cos(o.yaw[k])))
            q = rpy_quat(float(o_roll[k]), float(o_pitch[k]), yaw)
            yield t_ns, _PRIO[TOPIC_TF], TOPIC_TF, m.TFMessage(transforms=[
                m.transform(t_ns, FRAME_ODOM, FRAME_BASE, (o.x[k], o.y[k], 0.0), q)])
            yield t_ns, _PRIO[TOPIC_ODOM], TOPIC_ODOM, m.odometry(
                t_ns, o.x[k], o.y[k], yaw, o.speed[k], o.yaw_rate[k], o.pos_sigma[k] ** 2, o.yaw_sigma[k] ** 2,
                o.speed_sigma ** 2, o.yaw_rate_sigma ** 2, o_roll[k], o_pitch[k], tilt_var)

    def imu_stream() -> Iterator:
        yaw_var = np.interp(imu.t, sim.odom.t, sim.odom.yaw_sigma) ** 2
        for k in range(len(imu.t)):
            t_ns = stamp_ns(imu.t[k])
            rpy = imu.orientation_rpy[k].copy()
            rpy[2] = math.atan2(math.sin(rpy[2]), math.cos(rpy[2]))
            yield t_ns, _PRIO[TOPIC_IMU], TOPIC_IMU, m.imu(t_ns, rpy, imu.gyro[k], imu.accel[k], imu.tilt_sigma ** 2,
                                                          yaw_var[k], imu.gyro_sigma ** 2, imu.accel_sigma ** 2)

    def gnss_stream() -> Iterator:
        g = sim.gnss
        lat, lon = _latlon(frame, g.x, g.y)
        tlat, tlon = _latlon(frame, g.true_x, g.true_y)
        for k in range(len(g.t)):
            t_ns = stamp_ns(g.t[k])
            fix = bool(g.status[k] == STATUS_FIX)
            yield t_ns, _PRIO[TOPIC_FIX], TOPIC_FIX, m.navsatfix(
                t_ns, lat[k], lon[k], g.alt[k], g.sigma_h[k] ** 2, g.sigma_v[k] ** 2, fix)
            yield t_ns, _PRIO[TOPIC_FIX_TRUTH], TOPIC_FIX_TRUTH, m.navsatfix(
                t_ns, tlat[k], tlon[k], g.true_alt[k], 0.0, 0.0, True)

    cx, cy, cyaw, cz, cpitch, croll = camera_poses(sim, camera.mount_height_m)
    level = not (np.any(cpitch) or np.any(croll) or np.any(cz != camera.mount_height_m))
    bar = tqdm(total=len(sim.camera_t), desc="drive", unit="frame", disable=not progress, leave=False)
    it = None if callable(frames) else iter(frames)
    timed = it is None and _takes_time(frames)

    def camera_stream() -> Iterator:
        for k, t in enumerate(sim.camera_t):
            t_ns = stamp_ns(t)
            if it is None:
                kw = {"t": float(t)} if timed else {}
                if level:
                    img = frames(float(cx[k]), float(cy[k]), float(cyaw[k]), **kw)
                else:
                    img = frames(float(cx[k]), float(cy[k]), float(cyaw[k]), z=float(cz[k]), pitch=float(cpitch[k]),
                                 roll=float(croll[k]), **kw)
            else:
                try:
                    img = next(it)
                except StopIteration:
                    raise InvalidArgument(f"frame source ended after {k} of {len(sim.camera_t)} frames") from None
            img = np.asarray(img)
            if img.shape != (camera.height, camera.width, 3) or img.dtype != np.uint8:
                raise InvalidArgument(f"frame {k} is {img.dtype} {img.shape}; expected uint8 "
                                      f"({camera.height}, {camera.width}, 3) for the camera")
            yield t_ns, _PRIO[TOPIC_IMAGE], TOPIC_IMAGE, m.image(t_ns, img)
            if cfg.compressed:
                yield t_ns, _PRIO[TOPIC_COMPRESSED], TOPIC_COMPRESSED, m.compressed(t_ns, img, cfg.jpeg_quality)
            yield t_ns, _PRIO[TOPIC_CAMERA_INFO], TOPIC_CAMERA_INFO, m.camera_info(t_ns, camera, cam_K)
            bar.update(1)

    streams = [static_stream(), odom_stream(), gnss_stream(), camera_stream()]
    if imu is not None:
        streams.append(imu_stream())
    try:
        with BagWriter(bag_dir, topics, cfg.storage) as w:
            for t_ns, _, topic, msg in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
                w.write(topic, t_ns, msg)
    finally:
        bar.close()
    size = sum(p.stat().st_size for p in Path(bag_dir).rglob("*") if p.is_file())
    return BagSummary(path=Path(bag_dir), storage=cfg.storage, counts=dict(w.counts), payload_bytes=w.bytes,
                      size_bytes=size, seconds=time.perf_counter() - t0)


def write_truth_csv(path: Path, sim: DriveSim, frame) -> Path:
    """Ground truth of base_link at each camera frame (``TRUTH_COLUMNS``), fixed decimals. z is the
    ground under base_link above the terrain datum; pitch and roll are REP-103 radians."""
    st = sim.truth.at(sim.camera_t)
    lat, lon = _latlon(frame, st.x, st.y)
    n = len(sim.camera_t)
    z, pitch, roll = sim.attitude.at(sim.camera_t) if sim.attitude is not None else (np.zeros(n),) * 3
    extra = sim.conditions is not None and not sim.conditions.is_default
    load = -math.radians((sim.realisation or {}).get("load_pitch_deg", 0.0))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TRUTH_COLUMNS + (TRUTH_CONDITIONS_COLUMNS if extra else ()))
        for k, t in enumerate(sim.camera_t):
            w.writerow([f"{t:.6f}", stamp_ns(t), f"{st.x[k]:.4f}", f"{st.y[k]:.4f}", f"{st.yaw[k]:.6f}",
                        f"{lat[k]:.9f}", f"{lon[k]:.9f}", f"{st.speed[k]:.4f}", f"{z[k]:.4f}", f"{pitch[k]:.7f}",
                        f"{roll[k]:.7f}"] + ([f"{load:.7f}"] if extra else []))
    return Path(path)


def read_truth_csv(path: Path) -> Dict[str, np.ndarray]:
    """``truth.csv`` as column arrays (stamp_ns as int64, the rest float64)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    cols = {}
    for j, name in enumerate(header):
        dtype = np.int64 if name == "stamp_ns" else float
        cols[name] = np.array([r[j] for r in body], dtype=dtype)
    return cols


@dataclass
class DriveOutputs:
    out_dir: Path
    bag: BagSummary
    manifest: Dict[str, Any]
    stats: Dict[str, Any] = field(default_factory=dict)

    @property
    def bag_dir(self) -> Path:
        return self.out_dir / "bag"


def write_drive(out_dir: Path, world: World, sim: DriveSim, camera: PinholeCamera, frames: FrameSource, *,
                appearance: Optional[Dict[str, Any]] = None, world_dir: Optional[Path] = None, force: bool = False,
                progress: bool = False, command: Optional[str] = None,
                sensor: Optional[Dict[str, Any]] = None,
                render_realisation: Union[None, Dict[str, Any], Callable[[], Dict[str, Any]]] = None) -> DriveOutputs:
    """Write ``OUT/bag``, ``OUT/truth.csv`` and ``OUT/drive.json`` for a simulated drive.

    ``sensor``: the camera's exposure/noise model (``sim.render.SensorModel.to_dict``; None: legacy).
    Under non-default conditions (``sim.conditions``, carried by ``sim.conditions``), drive.json gets
    ``conditions`` and ``realisation`` (``drive_realisation``); ``render_realisation``, a dict or a
    callable giving one after the frames are rendered (``GroundRenderer.realisation``), goes into
    ``realisation.renderer``. Without them drive.json is as before (absent: default conditions).

    Refuses a non-empty ``out_dir`` unless ``force`` (``prepare_output_dir``). Images are
    streamed from ``frames`` (see ``write_drive_bag``). If writing fails, the incomplete
    bag is removed and no manifest is written.
    """
    from .. import __version__

    out_dir = Path(out_dir)
    prepare_output_dir(out_dir, force=force)
    frame = world.meta.frame
    truth_path = write_truth_csv(out_dir / "truth.csv", sim, frame)
    bag_dir = out_dir / "bag"
    try:
        summary = write_drive_bag(bag_dir, sim, camera, frames, frame, progress=progress)
    except BaseException:
        shutil.rmtree(bag_dir, ignore_errors=True)
        log.error("writing the bag failed; removed the incomplete %s", bag_dir)
        raise
    stats = sim.stats()
    cfg = sim.config
    rates = {TOPIC_IMAGE: cfg.camera_hz, TOPIC_COMPRESSED: cfg.camera_hz, TOPIC_CAMERA_INFO: cfg.camera_hz,
             TOPIC_FIX: cfg.gnss_hz, TOPIC_FIX_TRUTH: cfg.gnss_hz, TOPIC_ODOM: cfg.odom_hz, TOPIC_TF: cfg.odom_hz,
             TOPIC_IMU: cfg.imu_hz,
             TOPIC_TF_STATIC: None}
    world_info: Dict[str, Any] = {"seed": world.meta.seed, "size_m": world.meta.size_m, "gsd_m": world.meta.gsd_m,
                                  "crs": world.frame.crs, "frame": world.frame.to_dict(),
                                  "origin_lat": world.meta.origin_lat, "origin_lon": world.meta.origin_lon}
    if world_dir is not None:
        world_info["path"] = str(Path(world_dir).resolve())
        wj = Path(world_dir) / "world.json"
        if wj.is_file():
            world_info["manifest_sha256"] = sha256_file(wj)
    manifest = {
        "format": DRIVE_FORMAT,
        "format_version": DRIVE_FORMAT_VERSION,
        "tool_version": __version__,
        "command": command,
        "config": cfg.to_dict(),
        "world": world_info,
        "appearance": appearance,
        "camera": dict(camera.to_dict(), K=camera.K.tolist(), fx=camera.fx, vfov_deg=camera.vfov_deg,
                       sensor=sensor),
        "survey_gap": survey_vs_drive(world, appearance),
        "rig": asdict(cfg.rig),
        "time": {"epoch_ns": EPOCH_NS, "stamp": "header stamp = bag timestamp = epoch_ns + round(t * 1e9)"},
        "conventions": {
            "local_frame": "world local frame: UTM grid axes, x east, y north (m), origin = world frame origin",
            "yaw": "rad CCW from grid east (REP-103); UTM grid convergence ignored",
            "odom": "dead reckoning; odom frame = base_link pose at t = 0",
            "gnss_outage": "status NO_FIX, NaN position, covariance type UNKNOWN",
            "gnss_covariance": "nominal receiver sigma (hdop-scaled); multipath not reflected",
            "truth_csv": "base_link at each camera frame time; z = terrain under base_link above the datum",
            "attitude": "REP-103 roll, pitch, yaw: R = Rz(yaw) Ry(pitch) Rx(roll); pitch > 0 nose down, "
                        "roll > 0 right side down",
            "imu": "imu_link = base_link axes; orientation = roll/pitch estimate + odometry yaw (odom frame); "
                   "linear_acceleration = specific force R^T (a + g e_z)",
            "pixels": "ROS/OpenCV: pixel centres at integer coordinates, cx = (W - 1) / 2",
        },
        "bag": {"path": "bag", "storage": cfg.storage, "rosbag2_version": BAG_VERSION,
                "size_bytes": summary.size_bytes},
        "topics": [{"name": t.name, "type": t.msgtype, "frame_id": t.frame_id, "rate_hz": rates[t.name],
                    "count": summary.counts[t.name], "description": t.description}
                   for t in drive_topics(cfg.compressed)],
        "counts": summary.counts,
        "stats": stats,
        **_conditions_entries(sim, camera, render_realisation),
        "files": {str(p.relative_to(out_dir)): sha256_file(p)
                  for p in sorted([truth_path, *bag_dir.rglob("*")]) if p.is_file()},
    }
    (out_dir / "drive.json").write_text(json.dumps(_jsonable(manifest), indent=2, sort_keys=True) + "\n")
    return DriveOutputs(out_dir=out_dir, bag=summary, manifest=manifest, stats=stats)


def drive_realisation(sim: DriveSim, camera: PinholeCamera,
                      render_realisation: Union[None, Dict[str, Any], Callable[[], Dict[str, Any]]] = None
                      ) -> Dict[str, Any]:
    """What the conditions of ``sim`` drew: the true and the published camera mounting, the load
    pitch, the odometry scale error (and slip), the GNSS environment, plus the renderer's."""
    rr = render_realisation() if callable(render_realisation) else render_realisation
    return dict(sim.realisation or {}, camera={
        "true": true_camera(sim, camera).to_dict(), "published": published_camera(sim, camera).to_dict(),
        "note": "frames rendered with the true camera; /tf_static (base_link -> camera_link) and camera_info "
                "carry the published one = true + conditions.calib (fx and fy both scaled by 1 + fx_pct/100)"},
                renderer=rr)


def _conditions_entries(sim: DriveSim, camera: PinholeCamera, render_realisation) -> Dict[str, Any]:
    if sim.conditions is None or sim.conditions.is_default:
        return {}
    return {"conditions": sim.conditions.to_dict(),
            "realisation": drive_realisation(sim, camera, render_realisation)}


def read_drive_manifest(drive_dir: Path) -> Dict[str, Any]:
    """``drive_dir/drive.json``, checked for format and version (``core.manifest``)."""
    path = Path(drive_dir) / "drive.json"
    if not path.is_file():
        raise IncompatibleArtifact(f"{drive_dir} is not a drive (no drive.json); record one with `geoloc sim drive`")
    return read_manifest(path, DRIVE_FORMAT, READABLE_DRIVE_VERSIONS, what="geoloc drive",
                         rebuild=f"record it again with `geoloc sim drive --out {drive_dir} --force`")


def survey_vs_drive(world: World, appearance: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What differs between the orthophoto's survey and this drive (for drive.json)."""
    sv = world.survey or {}
    app = appearance or {}
    return {"survey_parts": sv.get("parts", []),
            "survey_sun": {"azimuth_deg": world.meta.params.get("survey_sun_azimuth_deg"),
                           "elevation_deg": world.meta.params.get("survey_sun_elevation_deg")},
            "drive_sun": {"azimuth_deg": app.get("sun_azimuth_deg"), "elevation_deg": app.get("sun_elevation_deg")},
            "survey_season": sv.get("season"), "drive_season": app.get("season"),
            "survey_cars": {k: v for k, v in (sv.get("cars") or {}).items() if not k.endswith("_xy")},
            "drive_kerb_car_density": app.get("parked_car_density"),
            "misregistration": sv.get("misregistration"), "terrain": world.terrain is not None}


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o

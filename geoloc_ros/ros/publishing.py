"""What ``geoloc_node`` publishes for an estimate: the corrected NavSatFix and the pose (their fields
from ``core.msgconv.fix_fields`` / ``pose_fields``, as the replay's estimate export), the path,
the candidate markers and the debug image. A mixin of ``node.GeolocMixin``."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..core import msgconv
from ..core.images import rgb_to_image_fields


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or key (Estimate fields may be attributes; candidates may be a dict or an object)."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


class PublishingMixin:
    """Publishers (``_make_publishers``) and what goes out on them (``_publish_estimate``)."""

    def _make_publishers(self, create_publisher) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Path
        from sensor_msgs.msg import Image, NavSatFix
        from visualization_msgs.msg import MarkerArray

        s = self.settings
        rel = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        one = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        best = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
        self.pub_fix = create_publisher(NavSatFix, "geoloc/fix", rel)
        self.pub_pose = create_publisher(PoseWithCovarianceStamped, "geoloc/pose", rel)
        # the same pose in the orthophoto's own frame (what a planner on the same orthophoto wants)
        self.pub_map_pose = create_publisher(PoseWithCovarianceStamped, "geoloc/map_pose", rel)
        self.pub_path = create_publisher(Path, "geoloc/path", one)
        self.pub_markers = create_publisher(MarkerArray, "geoloc/candidates", one)
        self.pub_debug = create_publisher(Image, "geoloc/debug_image", best) if s.publish_debug_image else None
        self.pub_diag = create_publisher(DiagnosticArray, "/diagnostics", rel)
        self._pubs = [p for p in (self.pub_fix, self.pub_pose, self.pub_map_pose, self.pub_path, self.pub_markers, self.pub_debug,
                                  self.pub_diag) if p is not None]
        self._path_msg = Path()
        self._path_msg.header.frame_id = s.map_frame

    def _stamp(self, msg_header, t: float, frame_id: str) -> None:
        msg_header.stamp.sec, msg_header.stamp.nanosec = msgconv.sec_to_stamp_parts(t)
        msg_header.frame_id = frame_id

    def _publish_estimate(self, est, keyframe: bool) -> None:
        from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
        from sensor_msgs.msg import NavSatFix

        s = self.settings
        t = float(_get(est, "t"))
        x, y, yaw = float(_get(est, "x")), float(_get(est, "y")), float(_get(est, "yaw", 0.0) or 0.0)
        cov = np.asarray(_get(est, "cov"), float).reshape(3, 3)
        status = str(_get(est, "status", "tracking"))
        self._last_est, self._last_status = est, status
        self._last_reasons = list(_get(est, "reasons", []) or [])
        if not (math.isfinite(x) and math.isfinite(y) and np.all(np.isfinite(cov[:2, :2]))):
            self.drops.add("estimate.nonfinite", "the localizer returned a non-finite estimate; not published")
            return

        raw = self.router.last_fix
        f = msgconv.fix_fields(est.lat, est.lon, cov[:2, :2], self.loc.grid_convergence_deg(x, y),
                               ok=msgconv.estimate_status_ok(status),
                               altitude=raw.altitude if raw is not None else float("nan"),
                               var_up=raw.var_up if raw is not None else None,
                               service=raw.service if raw is not None else None)
        fix = NavSatFix(latitude=f["latitude"], longitude=f["longitude"], altitude=f["altitude"],
                        position_covariance=f["position_covariance"],
                        position_covariance_type=f["position_covariance_type"])
        self._stamp(fix.header, t, s.base_frame)
        fix.status.status, fix.status.service = f["status"], f["service"]
        self.pub_fix.publish(fix)

        p = msgconv.pose_fields(x, y, yaw, cov)
        pose = PoseWithCovarianceStamped()
        self._stamp(pose.header, t, s.map_frame)
        pp = pose.pose.pose
        pp.position.x, pp.position.y, pp.position.z = p["position"]
        pp.orientation.x, pp.orientation.y, pp.orientation.z, pp.orientation.w = p["orientation"]
        pose.pose.covariance = p["covariance"]
        self.pub_pose.publish(pose)
        self._publish_map_pose(est, t, yaw, cov)
        self.rate_pub.tick()

        ps = PoseStamped()
        ps.header = pose.header
        ps.pose = pose.pose.pose
        self._path_msg.poses.append(ps)
        if len(self._path_msg.poses) > s.path_max_poses:
            del self._path_msg.poses[: len(self._path_msg.poses) - s.path_max_poses]
        self._path_msg.header.stamp = pose.header.stamp
        self.pub_path.publish(self._path_msg)
        self._path_xy.append((x, y))
        if keyframe:
            self._publish_markers(est, pose.header)
            if self.pub_debug is not None and self.pub_debug.get_subscription_count() > 0:
                self._publish_debug(est, pose.header, x, y, yaw, cov, status)

    def _publish_map_pose(self, est, t: float, yaw: float, cov: np.ndarray) -> None:
        """geoloc/map_pose: the pose in the orthophoto's own frame (``map_ortho_frame``): the filter's
        estimate before the learned offset is added (``Estimate.ortho_*``)."""
        from geometry_msgs.msg import PoseWithCovarianceStamped

        ox, oy = float(_get(est, "ortho_x", float("nan"))), float(_get(est, "ortho_y", float("nan")))
        oc = _get(est, "ortho_cov")
        oc = cov if oc is None else np.asarray(oc, float).reshape(3, 3)
        if not (math.isfinite(ox) and math.isfinite(oy)):
            ox, oy = float(_get(est, "x")), float(_get(est, "y"))
        p = msgconv.pose_fields(ox, oy, yaw, oc)
        pose = PoseWithCovarianceStamped()
        self._stamp(pose.header, t, self.settings.map_ortho_frame)
        pp = pose.pose.pose
        pp.position.x, pp.position.y, pp.position.z = p["position"]
        pp.orientation.x, pp.orientation.y, pp.orientation.z, pp.orientation.w = p["orientation"]
        pose.pose.covariance = p["covariance"]
        self.pub_map_pose.publish(pose)

    def _publish_markers(self, est, header) -> None:
        from visualization_msgs.msg import Marker, MarkerArray

        k = self.settings.markers_top_k
        cand = _get(est, "candidates")
        arr = MarkerArray()
        clear = Marker()
        clear.header = header
        clear.action = Marker.DELETEALL
        arr.markers.append(clear)
        if cand is not None and k > 0:
            xs = np.asarray(_get(cand, "x", []), float).reshape(-1)[:k]
            ys = np.asarray(_get(cand, "y", []), float).reshape(-1)[:k]
            sc = np.asarray(_get(cand, "score", _get(cand, "scores", [])), float).reshape(-1)[:k]
            ok = np.isfinite(xs) & np.isfinite(ys)
            if ok.any():
                lo, hi = (float(np.nanmin(sc[ok])), float(np.nanmax(sc[ok]))) if sc.size == xs.size else (0.0, 1.0)
                for i in np.flatnonzero(ok):
                    m = Marker()
                    m.header = header
                    m.ns, m.id = "candidates", int(i)
                    m.type, m.action = Marker.SPHERE, Marker.ADD
                    m.pose.position.x, m.pose.position.y, m.pose.position.z = float(xs[i]), float(ys[i]), 0.5
                    m.pose.orientation.w = 1.0
                    m.scale.x = m.scale.y = m.scale.z = 4.0 if i == 0 else 2.5
                    v = (float(sc[i]) - lo) / (hi - lo) if sc.size == xs.size and hi > lo else 1.0
                    m.color.r, m.color.g, m.color.b, m.color.a = 1.0, float(v), float(1.0 - v), 0.8
                    arr.markers.append(m)
        self.pub_markers.publish(arr)

    def _debug_renderer(self):
        if self._debug is None:
            from .debug_image import DebugRenderer

            s = self.settings
            ortho = s.debug_orthophoto or None
            if ortho is None and self.index is not None:
                man = getattr(self.index, "manifest", {}) or {}
                img = man.get("imagery") if isinstance(man.get("imagery"), dict) else {}
                ortho = img.get("path") if img.get("kind", "geotiff") == "geotiff" else None  # XYZ: not drawn
                if ortho is not None:
                    from pathlib import Path

                    ortho = Path(ortho)
                    if not ortho.is_absolute():
                        ortho = Path(s.index_path) / ortho
                    if not ortho.is_file():
                        ortho = None
            cell = float(getattr(self.index, "spacing_m", 5.0) or 5.0)
            self._debug = DebugRenderer(self.frame, ortho, s.debug_image_size_px, s.debug_crop_m, cell_m=cell)
        return self._debug

    def _publish_debug(self, est, header, x, y, yaw, cov, status) -> None:
        from sensor_msgs.msg import Image

        try:
            sm = _get(est, "sim_map")
            sim = None
            if sm is not None:
                sim = (_get(sm, "x"), _get(sm, "y"), _get(sm, "score", _get(sm, "scores")))
                if any(v is None for v in sim):
                    sim = None
            cand = _get(est, "candidates")
            cands = None
            if cand is not None:
                cands = (np.asarray(_get(cand, "x", []), float).reshape(-1),
                         np.asarray(_get(cand, "y", []), float).reshape(-1),
                         np.asarray(_get(cand, "score", _get(cand, "scores", [])), float).reshape(-1))
            raw = self.router.last_fix
            gcov = raw.sample.cov_en if raw is not None and raw.sample.ok else None
            conf = _get(est, "confidence")
            text = (f"{status} conf {float(conf):.2f} " if conf is not None else f"{status} ") + \
                f"t {float(_get(est, 't')):.1f} " + ", ".join(self._last_reasons)
            pic = self._debug_renderer().render(
                centre=(x, y), estimate={"x": x, "y": y, "yaw": yaw, "cov": cov, "status": status}, sim_map=sim,
                candidates=cands, gnss=list(self._gnss_xy), gnss_cov=gcov, path=list(self._path_xy), text=text)
            f = rgb_to_image_fields(pic)
            msg = Image(height=f["height"], width=f["width"], encoding=f["encoding"], is_bigendian=0, step=f["step"])
            msg.data = f["data"]
            msg.header = header
            self.pub_debug.publish(msg)
        except Exception as exc:
            self.drops.add("debug_image.error", f"{type(exc).__name__}: {exc}")

"""``/diagnostics`` of ``geoloc_node``: status and reasons, input figures, rates, latency, queue,
drops and events by reason, the index and the Localizer's counters. A mixin of ``node.GeolocMixin``."""
from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

STATUS_LEVEL = {"tracking": 0, "initialising": 0, "degraded": 1, "lost": 2}  # DiagnosticStatus levels


class DiagnosticsMixin:
    """``diagnostics_status`` (also used by tests) and its publication on the diagnostics timer."""

    def _backend_name(self) -> str:
        enc = self.encoder if self.encoder is not None else getattr(self.loc, "encoder", None)
        return str(getattr(enc, "backend", "?"))

    def _index_stats(self) -> Dict[str, Any]:
        try:
            return dict(self.index.stats()) if self.index is not None else {}
        except Exception:
            return {}

    def diagnostics_status(self):
        """(level, message, [(key, value)]) of the current state; also used by tests."""
        s = self.settings
        now = time.monotonic()
        drops = self.drops.snapshot()
        new = {k: v - self._drops_at_last_diag.get(k, 0) for k, v in drops.items()
               if v > self._drops_at_last_diag.get(k, 0)}
        self._drops_at_last_diag = drops
        level, msgs = STATUS_LEVEL.get(self._last_status, 1), [self._last_status]
        if self._last_reasons:
            msgs[0] += f" ({', '.join(self._last_reasons)})"
        if self._worker is None or not self._worker.is_alive():
            level, msgs = 2, ["worker thread stopped"] + msgs
        for k in ("image", "fix"):
            last = self.rate_in[k].last
            if last is None:
                level = max(level, 1)
                msgs.append(f"no {k} received yet")
            elif now - last > s.stale_input_s:
                level = max(level, 1)
                msgs.append(f"no {k} for {now - last:.1f} s")
        if new:
            level = max(level, 1)
            msgs.append("dropped " + ", ".join(f"{v} {k}" for k, v in sorted(new.items())))
        events = self.events.snapshot()
        new_ev = {k: v - self._events_at_last_diag.get(k, 0) for k, v in events.items()
                  if v > self._events_at_last_diag.get(k, 0)}
        self._events_at_last_diag = events
        if new_ev.get("fix.outside_index"):
            level = max(level, 1)
            msgs.append(f"{new_ev['fix.outside_index']} fix.outside_index (GNSS outside the tile index)")
        if new_ev.get("time_backwards"):
            msgs.append(f"time went backwards {new_ev['time_backwards']}x: reset")
        if new_ev.get("fix.covariance_invalid"):
            level = max(level, 1)
            msgs.append(f"{new_ev['fix.covariance_invalid']} fix.covariance_invalid (default sigma used)")
        mo = self.loc.map_offset_health() if self.loc is not None and hasattr(self.loc, "map_offset_health") else {}
        if mo:
            msgs.append(f"map offset ({mo['east_m']:+.2f}, {mo['north_m']:+.2f}) m +- {mo['sigma_m']:.2f} m on "
                        f"{mo['independent_samples']:.1f} independent samples")
        with self._inputs_lock:
            input_warnings, input_values = self.inputs.report()
        if input_warnings:
            level = max(level, 1)
            msgs += input_warnings

        def pct(d, q):
            with self._stats_lock:
                a = np.asarray(list(d), float)
            return f"{np.percentile(a, q):.1f}" if a.size else "nan"

        ist = self._index_stats()
        values = [
            ("status", self._last_status), ("reasons", ", ".join(self._last_reasons)),
            ("backend", self._backend_name()), ("model", s.model), ("index_path", s.index_path),
            ("index.shards_loaded", str(ist.get("shards_loaded", "?"))),
            ("index.shards_total", str(ist.get("shards_total", "?"))),
            ("index.tiles_loaded", str(ist.get("tiles_loaded", "?"))),
            ("index.memory_mb", str(ist.get("memory_mb", "?"))),
            ("rate.image_in_hz", f"{self.rate_in['image'].rate():.2f}"),
            ("rate.fix_in_hz", f"{self.rate_in['fix'].rate():.2f}"),
            ("rate.odom_in_hz", f"{self.rate_in['odom'].rate():.2f}"),
            ("rate.keyframes_hz", f"{self.rate_keyframe.rate():.2f}"),
            ("rate.published_hz", f"{self.rate_pub.rate():.2f}"),
            ("count.images_in", str(self.rate_in["image"].total)), ("count.fixes_in", str(self.rate_in["fix"].total)),
            ("count.keyframes", str(self.rate_keyframe.total)), ("count.published", str(self.rate_pub.total)),
            ("count.images_converted", str(self.count["images_converted"])),
            ("count.images_processed", str(self.count["images_processed"])),
            ("latency.receipt_to_publish_p50_ms", pct(self._lat_ms, 50)),
            ("latency.receipt_to_publish_p95_ms", pct(self._lat_ms, 95)),
            ("latency.stamp_to_publish_p50_ms", pct(self._stamp_lat_ms, 50)),
            ("latency.compute_p50_ms", pct(self._compute_ms, 50)),
            ("queue.depth", str(len(self.queue))), ("queue.images", str(self.queue.n_images)),
            ("drops.total", str(sum(drops.values()))),
        ]
        values += input_values
        values += [(f"drops.{k}", str(v)) for k, v in sorted(drops.items())]
        values += [(f"events.{k}", str(v)) for k, v in sorted(events.items())]
        try:
            st = self.loc.stats()
            values += [(f"localizer.{k}", str(v)) for k, v in sorted(_flatten(st).items())]
        except Exception as exc:
            values.append(("localizer.stats_error", str(exc)))
        return level, "; ".join(msgs), values

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        try:
            level, message, values = self.diagnostics_status()
        except Exception as exc:
            level, message, values = 2, f"diagnostics failed: {exc}", []
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        st = DiagnosticStatus()
        st.level = bytes([level]) if isinstance(DiagnosticStatus().level, bytes) else level
        st.name = f"{self.get_name()}: localization"
        st.message = message
        st.hardware_id = "geoloc"
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values]
        arr.status = [st]
        self.pub_diag.publish(arr)


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out

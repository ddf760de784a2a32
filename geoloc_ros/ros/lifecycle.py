"""``geoloc_lifecycle_node``: ``geoloc_node`` as a managed (lifecycle) node.

Same parameters, topics and diagnostics as ``geoloc_node`` (``ros.node``), but started
unconfigured, so a bring-up (nav2's lifecycle_manager, a launch file, ``ros2 lifecycle set``)
orders it with the rest of the vehicle and can recover it:

* configure:  load the encoder, the tile index and the Localizer; create the publishers and the
  worker thread. A missing index or model fails the transition (the node stays unconfigured) and
  logs one ERROR line saying what to fix; bad parameters stop the process at start (status 2),
  as with ``geoloc_node``;
* activate:   subscribe to the camera, GNSS and odometry; publish outputs and /diagnostics;
* deactivate: unsubscribe, discard waiting input; nothing is published while inactive
  (lifecycle publishers, no diagnostics timer);
* cleanup:    stop the worker, destroy the publishers, release model and index (back to
  unconfigured); shutdown: the same from any state.

Run: ``ros2 run geoloc_ros geoloc_lifecycle_node --ros-args --params-file config/geoloc.yaml``
(or ``python -m geoloc_ros.ros.lifecycle ...``), then ``ros2 lifecycle set /geoloc_node configure``
and ``... activate``. Uses only the rclpy.lifecycle API of ROS 2 Humble.
"""
from __future__ import annotations

import sys
import traceback
from typing import List, Optional

from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from ..core.errors import GeolocError
from . import params as P
from .node import GeolocMixin, run


class GeolocLifecycleNode(GeolocMixin, LifecycleNode):
    def __init__(self, **node_kwargs):
        """Declare and validate the parameters (InvalidArgument when they are wrong); load nothing."""
        super().__init__(P.NODE_NAME, **node_kwargs)
        self._declare()
        self.get_logger().info(f"{P.NODE_NAME} (lifecycle) unconfigured: configure loads model {self.settings.model} "
                               f"and index {self.settings.index_path}")

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure(create_publisher=self.create_lifecycle_publisher)
        except GeolocError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # a bug or an environment problem: the traceback, and stay unconfigured
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {self._ready_line()}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._activate()
        except GeolocError as exc:  # e.g. metric matching with no way to know the camera mounting
            self.get_logger().error(f"activate failed: {exc}")
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("active: subscribed, publishing")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("inactive: unsubscribed, publishing nothing")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("unconfigured: model and index released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: releasing everything (back to unconfigured)")
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``geoloc_lifecycle_node``."""
    return run(GeolocLifecycleNode, "geoloc_lifecycle_node", argv)


if __name__ == "__main__":
    sys.exit(main())

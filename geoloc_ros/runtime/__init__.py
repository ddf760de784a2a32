"""The one way in: what the node, the bag replay, the live run, ``eval calibrate`` and the demo
share between their inputs (ROS messages, from DDS or from a bag) and the Localizer.

* ``build``: ``load_measurements`` (orthophoto -> metric matcher, tile index + model -> retrieval;
  either alone is enough, neither is a clear error) and ``build_localizer`` (the Localizer and,
  for evaluation, its GNSS + odometry baseline on the same map frame);
* ``camera``: the camera model from camera_info and the mounting (/tf_static, else an explicit
  ``camera_mount``; never guessed);
* ``router``: ``InputRouter``: a message in (image, fix, odometry, camera_info, /tf_static),
  converted (``convert``, any thread) and applied to the Localizer (``apply``, its thread) with
  the stamps checked (time going backwards resets, ``localizer.time_backwards_eps_s``) and every
  unusable message counted by reason.

Above ``pipeline`` and ``metric``, below ``ros`` and ``evaluation`` (docs/architecture.md).
"""
from __future__ import annotations

from .build import Measurements, build_baseline, build_localizer, load_measurements
from .camera import camera_model, mount_from_param, mount_to_param
from .router import Counter, FixInput, ImageInput, InputRouter

__all__ = ["Measurements", "build_localizer", "build_baseline", "load_measurements", "camera_model",
           "mount_from_param", "mount_to_param", "Counter", "FixInput", "ImageInput", "InputRouter"]

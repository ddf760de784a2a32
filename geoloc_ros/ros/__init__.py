"""ROS 2 integration: the node and its conversions, nothing else (never evaluation or sim; the tools that
run DDS, ``geoloc play`` and ``evaluation.live``, import rclpy inside their functions).

* ``params``      parameter table, validation (ROS-free) and declaration with descriptors
* ``node``        ``GeolocNode`` and ``main`` (executable ``geoloc_node``)
* ``lifecycle``   the same node as a managed lifecycle node (executable ``geoloc_lifecycle_node``)
* ``debug_image`` the debug picture (numpy + Pillow, ROS-free)

Message conversions used here live in ``core.images`` and ``core.msgconv`` (ROS-free, shared with
the bag replay). Importing this package imports nothing heavy; ``node`` imports rclpy.
"""

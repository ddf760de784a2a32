"""ROS 2 integration: the only package that imports rclpy and *_msgs.

* ``params``      parameter table, validation (ROS-free) and declaration with descriptors
* ``node``        ``GeolocNode`` and ``main`` (executable ``geoloc_node``)
* ``debug_image`` the debug picture (numpy + Pillow, ROS-free)

Message conversions used here live in ``core.images`` and ``core.msgconv`` (ROS-free, shared with
the bag replay). Importing this package imports nothing heavy; ``node`` imports rclpy.
"""

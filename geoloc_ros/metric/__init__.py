"""Metric matching: the camera's sub-metre measurement (numpy + OpenCV; no torch, no rclpy).

bev.py        camera model (camera_info K/D, /tf_static mounting) and ground-plane projection
aerial.py     north-up aerial windows around a position, paged from the orthophoto (LRU budget)
features.py   feature extractors behind one interface: gradient (non-learned), learned (CNN pair)
correlate.py  FFT correlation over (x, y, heading) -> score volume
matcher.py    keyframe sequence -> local BEV mosaic (odometry) -> fused -> score volume
config.py     MetricParams (part of LocalizerConfig: ROS parameters localizer.metric_*)
"""

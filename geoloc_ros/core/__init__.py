"""ROS-free, torch-free core: geometry, types, manifests (numpy + stdlib, pyproj lazily)."""

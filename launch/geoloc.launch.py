"""Launch geoloc_node with its parameters file.

    ros2 launch geoloc_ros geoloc.launch.py index_path:=/data/index
    ros2 launch geoloc_ros geoloc.launch.py params_file:=/my/geoloc.yaml use_sim_time:=true namespace:=car1 \
        backend:=tensorrt model:=/opt/geoloc/engines/seqgeo_lite_orin

Arguments left empty keep the value from params_file (default: the installed config/geoloc.yaml).
With a bag: `ros2 bag play BAG --clock` (or `geoloc play BAG --clock`) and use_sim_time:=true.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

BACKENDS = ["", "auto", "tensorrt", "onnxruntime", "torch"]


def _node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    for name in ("backend", "model", "index_path", "image_topic", "fix_topic", "odom_topic"):
        value = arg(name)
        if value:
            overrides[name] = value
    return [Node(
        package="geoloc_ros",
        executable="geoloc_node",
        name="geoloc_node",
        namespace=arg("namespace"),
        parameters=[arg("params_file"), overrides],
        output="screen",
        emulate_tty=True,
    )]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("geoloc_ros"), "config", "geoloc.yaml"]),
            description="parameters file (geoloc_node: ros__parameters: ...)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="use /clock (bag playback with --clock)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("backend", default_value="", choices=BACKENDS,
                              description="inference backend; empty: the params_file value"),
        DeclareLaunchArgument("model", default_value="",
                              description="preset, checkpoint .pt or engines/NAME/ folder; empty: params_file"),
        DeclareLaunchArgument("index_path", default_value="", description="tile index folder; empty: params_file"),
        DeclareLaunchArgument("image_topic", default_value="", description="camera topic; empty: params_file"),
        DeclareLaunchArgument("fix_topic", default_value="", description="GNSS NavSatFix topic; empty: params_file"),
        DeclareLaunchArgument("odom_topic", default_value="", description="odometry topic; empty: params_file"),
        OpaqueFunction(function=_node),
    ])

"""Launch geoloc_node with its parameters file.

    ros2 launch geoloc_ros geoloc.launch.py index_path:=/data/index
    ros2 launch geoloc_ros geoloc.launch.py orthophoto:=/data/ortho.tif \
        camera_mount:="[1.5, 0.0, 1.7, 0.0, 8.0, 0.0]"      # metric matching alone; mounting without /tf_static
    ros2 launch geoloc_ros geoloc.launch.py params_file:=/my/geoloc.yaml use_sim_time:=true namespace:=car1 \
        backend:=tensorrt model:=/opt/geoloc/engines/seqgeo_lite_orin

    ros2 launch geoloc_ros geoloc.launch.py lifecycle:=true index_path:=/data/index   # managed node
    ros2 launch geoloc_ros geoloc.launch.py lifecycle:=true autostart:=false ...       # left unconfigured

Arguments left empty keep the value from params_file (default: the installed config/geoloc.yaml).
With a bag: `ros2 bag play BAG --clock` (or `geoloc play BAG --clock`) and use_sim_time:=true.
lifecycle:=true starts geoloc_lifecycle_node (a managed node); with autostart:=true (default) this
launch file configures it and, once configured, activates it; with autostart:=false a lifecycle
manager (nav2_lifecycle_manager with node_names: [geoloc_node]) or `ros2 lifecycle set` does.
"""
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

BACKENDS = ["", "auto", "tensorrt", "onnxruntime", "torch"]


def _node(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1", "yes")}
    for name in ("backend", "model", "index_path", "orthophoto", "image_topic", "fix_topic", "odom_topic"):
        value = arg(name)
        if value:
            overrides[name] = value
    mount = arg("camera_mount")
    if mount:  # "[x, y, z, roll, pitch, yaw]" or "x,y,z,roll,pitch,yaw"
        overrides["camera_mount"] = [float(v) for v in mount.strip("[]").split(",")]
    common = dict(name="geoloc_node", namespace=arg("namespace"), parameters=[arg("params_file"), overrides],
                  output="screen", emulate_tty=True)
    if arg("lifecycle").lower() not in ("true", "1", "yes"):
        return [Node(package="geoloc_ros", executable="geoloc_node", **common)]
    node = LifecycleNode(package="geoloc_ros", executable="geoloc_lifecycle_node", **common)
    actions = [node]
    if arg("autostart").lower() in ("true", "1", "yes"):
        def transition(tid):
            return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=tid))

        actions += [
            RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive",
                                                   entities=[transition(Transition.TRANSITION_ACTIVATE)])),
            transition(Transition.TRANSITION_CONFIGURE),
        ]
    return actions


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
        DeclareLaunchArgument("orthophoto", default_value="",
                              description="orthophoto for metric matching (alone, or with index_path); empty: params_file"),
        DeclareLaunchArgument("camera_mount", default_value="",
                              description="[x, y, z, roll, pitch, yaw] of camera_link in base_link (m, deg) when "
                                          "/tf_static cannot give it; empty: params_file"),
        DeclareLaunchArgument("image_topic", default_value="", description="camera topic; empty: params_file"),
        DeclareLaunchArgument("fix_topic", default_value="", description="GNSS NavSatFix topic; empty: params_file"),
        DeclareLaunchArgument("odom_topic", default_value="", description="odometry topic; empty: params_file"),
        DeclareLaunchArgument("lifecycle", default_value="false", choices=["true", "false"],
                              description="start geoloc_lifecycle_node (managed: configure loads, activate "
                                          "subscribes and publishes) instead of geoloc_node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="with lifecycle:=true: configure then activate it from this launch "
                                          "file; false: leave it unconfigured for a lifecycle manager"),
        OpaqueFunction(function=_node),
    ])

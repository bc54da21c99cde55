"""Deploy an exported policy with `ros2 launch` (machines with a full ROS 2 install).

The processes `s2r deploy` starts, with the same parameters file: robot_node hosting the policy
in its real-time loop and the recorder (`split:=true`: the policy in policy_node instead):

    ros2 launch s2r_ros deploy.launch.py policy:=/path/cartpole.onnx \
        driver:=sim:/path/hardware/configs/cartpole_hanging.yaml record:=/tmp/run.mcap

robot_node configures and activates itself (`autostart`); set `autostart:=false` to hand its
lifecycle to a manager (`ros2 lifecycle set /robot_node configure`, then `activate`).
Without a full install (the PyPI wheels have no `ros2 launch`), use `s2r deploy`.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("s2r_ros"))
    params_file = LaunchConfiguration("params_file")
    arguments = [
        DeclareLaunchArgument("policy", description="The exported .onnx policy (its contract is in the metadata)."),
        DeclareLaunchArgument("robot", default_value="cartpole",
                              description="Robot spec: a robot shipped with s2r or a spec YAML path."),
        DeclareLaunchArgument("driver", default_value="sim",
                              description="RobotInterface driver, KIND[:WHERE]: sim, or sim:SIMROBOT.yaml "
                                          "(latency, noise, start pose); see s2r.hardware.drivers."),
        DeclareLaunchArgument("record", default_value="",
                              description="Record every topic to this MCAP file; empty: no recorder."),
        DeclareLaunchArgument("split", default_value="false",
                              description="Run the policy in policy_node, over DDS (a policy on another computer); "
                                          "false: robot_node hosts it in its real-time loop."),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="robot_node configures and activates itself; false: a manager does."),
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "deploy.yaml"),
                              description="Parameters of the three nodes."),
        DeclareLaunchArgument("localhost_only", default_value="true",
                              description="Keep DDS discovery and traffic on this machine's loopback."),
    ]
    localhost = IfCondition(LaunchConfiguration("localhost_only"))
    environment = [
        SetEnvironmentVariable("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST", condition=localhost),
        SetEnvironmentVariable("ROS_LOCALHOST_ONLY", "1", condition=localhost),
    ]
    split = IfCondition(LaunchConfiguration("split"))
    hosted_policy = PythonExpression(["'' if '", LaunchConfiguration("split"), "' == 'true' else '",
                                      LaunchConfiguration("policy"), "'"])
    robot_node = LifecycleNode(
        package="s2r_ros", executable="robot_node", name="robot_node", namespace="", output="screen",
        parameters=[params_file, {
            "robot": LaunchConfiguration("robot"),
            "driver": LaunchConfiguration("driver"),
            "policy": hosted_policy,
            "autostart": LaunchConfiguration("autostart"),
        }],
    )
    policy_node = Node(
        package="s2r_ros", executable="policy_node", name="policy_node", output="screen", condition=split,
        parameters=[params_file, {"policy": LaunchConfiguration("policy"), "robot": LaunchConfiguration("robot")}],
    )
    recorder = Node(
        package="s2r_ros", executable="recorder", name="recorder", output="screen",
        parameters=[params_file, {"path": LaunchConfiguration("record")}],
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("record"), "' != ''"])),
    )
    return LaunchDescription([*arguments, *environment, recorder, robot_node, policy_node])

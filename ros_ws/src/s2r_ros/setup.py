"""colcon/ament_python build of s2r_ros for machines with a full ROS 2 install.

Wheel-based installs get the same package from the s2r distribution (pyproject.toml maps
ros_ws/src/s2r_ros/s2r_ros); this file installs it the ROS way, with its launch and config
files under share/s2r_ros and the nodes under lib/s2r_ros for `ros2 run` and launch.
"""

from glob import glob

from setuptools import setup

PACKAGE = "s2r_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    package_data={PACKAGE: ["fastdds.xml", "config/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob(f"{PACKAGE}/config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="ROS 2 nodes of s2r: robot_node, policy_node, recorder",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "robot_node = s2r_ros.robot_node:main",
            "policy_node = s2r_ros.policy_node:main",
            "recorder = s2r_ros.recorder:main",
        ],
    },
)

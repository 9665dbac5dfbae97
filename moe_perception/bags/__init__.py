"""rosbag2 tooling built on the pure-Python ``rosbags`` library (no ROS install needed)."""

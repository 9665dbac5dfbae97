"""Dataset readers, augmentation and corruptions; no rclpy, no training logic."""

from moe_perception.data.camvid import CAMVID_CLASSES, CAMVID_COLORS, CamVid, camvid_sequence
from moe_perception.data.common import IGNORE_INDEX, SegmentationSample, read_mask, read_rgb

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "IGNORE_INDEX",
    "CamVid",
    "SegmentationSample",
    "camvid_sequence",
    "read_mask",
    "read_rgb",
]

"""Dataset readers, augmentation and corruptions; no rclpy, no training logic."""

from moe_perception.data.camvid import CAMVID_CLASSES, CAMVID_COLORS, CamVid, camvid_sequence
from moe_perception.data.common import IGNORE_INDEX, SegmentationSample, read_mask, read_rgb
from moe_perception.data.datasets import DATASET_NAMES, DatasetName, open_dataset

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "CamVid",
    "DatasetName",
    "SegmentationSample",
    "camvid_sequence",
    "open_dataset",
    "read_mask",
    "read_rgb",
]

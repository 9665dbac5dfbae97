"""moe_perception: mixture-of-experts semantic segmentation with one-pass uncertainty."""

__version__ = "0.1.0"

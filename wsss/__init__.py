"""wsss: weakly supervised semantic segmentation, from image-level labels to a segmentation network."""

__version__ = "0.1.0"

"""Dataset preparation: `wsss-prepare voc12|coco14 --root DIR` (download, check, unpack, convert; resumable)."""

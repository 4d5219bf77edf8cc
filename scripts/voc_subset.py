"""A smaller VOC-layout set made of links into a larger one, to measure how a recipe holds on fewer images.

    python scripts/voc_subset.py SRC DST --split train --first 300

DST gets JPEGImages/, SegmentationClass/ (and Annotations/, cls_labels.json where SRC has them) as symbolic
links to SRC's, and ImageSets/Segmentation/ with `--split` cut to its first N ids (list order: a fixed,
stated choice) and every other split list of SRC as it is. Nothing is copied; `dataset.root=DST` reads it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

LINKED = ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "Annotations", "cls_labels.json")


def make_subset(src: Path, dst: Path, split: str, first: int) -> list[str]:
    lists = src / "ImageSets" / "Segmentation"
    ids = [line.strip() for line in (lists / f"{split}.txt").read_text().splitlines() if line.strip()]
    if first > len(ids):
        raise SystemExit(f"{lists / f'{split}.txt'} has {len(ids)} ids, fewer than --first {first}")
    out_lists = dst / "ImageSets" / "Segmentation"
    out_lists.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if (src / name).exists() and not (dst / name).exists():
            (dst / name).symlink_to((src / name).resolve())
    for path in lists.glob("*.txt"):
        kept = ids[:first] if path.stem == split else path.read_text().split()
        (out_lists / path.name).write_text("".join(f"{i}\n" for i in kept))
    return ids[:first]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--split", default="train")
    ap.add_argument("--first", type=int, required=True)
    args = ap.parse_args()
    kept = make_subset(args.src, args.dst, args.split, args.first)
    print(f"{args.dst}: {args.split} = the first {len(kept)} ids of {args.src}'s list")


if __name__ == "__main__":
    main()

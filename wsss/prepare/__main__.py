"""`wsss-prepare DATASET --root DIR`: download a benchmark's published archives (MD5-checked), unpack them and
convert them into the VOC-layout tree the pipeline reads. Resumable: a killed run goes on where it stopped, a
second run does nothing.

    wsss-prepare voc12 --root DIR    # VOC 2012 trainval + SBD → DIR/VOCdevkit/VOC2012 with train_aug
    wsss-prepare coco14 --root DIR   # COCO 2014 train/val → DIR/coco2014 (masks from the instance annotations)

Without internet access, put the archives in DIR/downloads/ first (their names and checksums: wsss/prepare/).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from wsss.errors import UserError
from wsss.io import exclusive_lock


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one, e.g. Linux; else all)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="wsss-prepare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["voc12", "coco14"])
    ap.add_argument("--root", type=Path, required=True, help="where the archives and the prepared tree go")
    ap.add_argument("--workers", type=int, default=usable_cpus(),
                    help="processes converting masks (default: every CPU)")
    ap.add_argument("--crowd", choices=["background", "ignore"], default="background",
                    help="coco14: crowd regions as background (the references) or 255 (ignored in scoring)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.root.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(args.root / f".wsss-prepare-{args.dataset}.lock"):  # a second run waits, then finds it done
            if args.dataset == "voc12":
                from wsss.prepare import voc

                tree = voc.prepare(args.root, args.workers)
                print(f"ready: wsss dataset=voc12 dataset.root={tree}")
            else:
                from wsss.prepare import coco

                tree = coco.prepare(args.root, args.workers, args.crowd)
                print(f"ready: wsss dataset=coco14 dataset.root={tree}")
    except UserError as e:
        print(f"wsss-prepare: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

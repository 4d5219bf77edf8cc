"""The pipeline's stages in order. This dict is the only lookup by name in the package.

Each stage module has `run(cfg, out_dir) -> metrics`, `VERSION` (bumped when its output format or
meaning changes), `STORED` (output kept in the artifact store, else in the run directory),
`identity(cfg)` (the config that determines its output), `upstream(cfg)` (stages it reads) and
optionally `needed(cfg)` (false: the stage does nothing for this config).
"""
from wsss.stages import (
    eval_cam,
    eval_seg,
    make_cam,
    make_prototypes,
    make_pseudo,
    train_cls,
    train_irn,
    train_recam,
    train_seg,
)

STAGES = {
    "train_cls": train_cls,
    "train_recam": train_recam,
    "make_prototypes": make_prototypes,
    "make_cam": make_cam,
    "eval_cam": eval_cam,
    "train_irn": train_irn,
    "make_pseudo": make_pseudo,
    "train_seg": train_seg,
    "eval_seg": eval_seg,
}

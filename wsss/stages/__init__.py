"""The pipeline's stages in order. This dict is the only lookup by name in the package.

Each stage module has `run(cfg, out_dir) -> metrics`, `VERSION` (bumped when its output format or
meaning changes), `STORED` (output kept in the artifact store, else in the run directory),
`identity(cfg)` (the config that determines its output) and `upstream(cfg)` (stages it reads).
"""
from wsss.stages import eval_cam, make_cam, train_cls

STAGES = {
    "train_cls": train_cls,
    "make_cam": make_cam,
    "eval_cam": eval_cam,
}

"""The head's linear-probe initialisation (wsss/models/linear_probe.py) on hand-made features."""
import torch
from torch import nn

from wsss.models.classifier import ClassifierModule
from wsss.models.linear_probe import fit_linear_head, pooled_features, probe_head
from wsss.stages.train_cls import probe_loader


def separable_problem(n=60, d=8, c=3, seed=0):
    """Class k present ⇔ feature k is high (+ noise in the other features): a linear head solves it."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, c, generator=g) < 0.4).float()
    feats = torch.rand(n, d, generator=g) * 0.3
    feats[:, :c] += 2 * labels - 1  # +1 when present, −1 when absent
    return feats, labels


def test_the_probe_solves_a_separable_problem_deterministically():
    feats, labels = separable_problem()
    w, loss = fit_linear_head(feats, labels)
    assert loss < 0.15  # the label prior gives 0.68 here
    assert torch.equal(((feats @ w.T) > 0).float(), labels)
    assert w.shape == (3, 8) and torch.equal(w, fit_linear_head(feats, labels)[0])  # no sampling
    # each class leans on its own feature
    assert torch.equal(w[:, :3].argmax(1), torch.arange(3))


class PoolMe(nn.Module):
    """A 'trunk' whose features are the input itself, recording the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return x * self.scale


def test_pooled_features_run_the_trunk_in_eval_mode_and_restore_it():
    trunk = PoolMe().train()
    x = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).reshape(2, 4, 3, 5)
    feats, labels = pooled_features(trunk, [(x, torch.ones(2, 3)), (x[:1], torch.zeros(1, 3))])
    assert trunk.modes == [False, False] and trunk.training
    assert torch.allclose(feats, torch.cat([x.mean((2, 3)), x[:1].mean((2, 3))]))
    assert labels.shape == (3, 3) and not feats.requires_grad


def test_probe_head_sets_the_bias_free_head():
    feats, labels = separable_problem(d=8)
    model = ClassifierModule(num_classes=3, backbone="resnet18")
    model.backbone, model.classifier = PoolMe(), nn.Conv2d(8, 3, 1, bias=False)
    batches = [(f[None, :, None, None].expand(1, 8, 2, 2), y[None]) for f, y in zip(feats, labels)]
    loss = probe_head(model, batches)
    assert loss < 0.15
    assert torch.equal((model(torch.stack([b[0][0] for b in batches])) > 0).float(), labels)


def test_probe_loader_gives_whole_images_at_the_middle_training_scale(tiny_cfg):
    from wsss.data import open_dataset

    cfg = tiny_cfg("cls.resize_long=[40,80]")
    layout = open_dataset(cfg)
    ids = layout.ids("train")[:3]
    for (x, y), img_id in zip(probe_loader(cfg, layout, ids, ((0.5,) * 3, (0.5,) * 3)), ids):
        assert max(x.shape[-2:]) == 60 and x.shape[:2] == (1, 3)
        assert torch.equal(y[0], torch.from_numpy(layout.labels(img_id)))


def test_the_softmax_probe_of_masked_class_rows():
    from wsss.models.linear_probe import fit_softmax_head, masked_class_rows
    from wsss.models.recam import masked_class_features

    # two 'images' of 4 channels on 2×2 grids; class c's CAM weight picks channel c
    x = torch.rand(2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    w_bce = torch.eye(3, 4)
    rows, targets = masked_class_rows(PoolMe(), w_bce, [(x, labels)])
    assert targets.tolist() == [0, 2, 1]  # one row per (image, present class), in order
    full = masked_class_features(x, w_bce)
    assert torch.allclose(rows, torch.stack([full[0, 0], full[0, 2], full[1, 1]]))
    # separable rows: the probe predicts every row's class
    g = torch.Generator().manual_seed(2)
    targets = torch.randint(0, 3, (40,), generator=g)
    feats = torch.rand(40, 6, generator=g) * 0.3 + torch.nn.functional.one_hot(targets, 6).float()
    w, loss = fit_softmax_head(feats, targets, 3)
    assert w.shape == (3, 6) and loss < 0.3 and torch.equal((feats @ w.T).argmax(1), targets)
    # centred over the classes (the softmax-invariant direction removed), as SGD from zero keeps it
    assert torch.allclose(w.sum(0), torch.zeros(6), atol=1e-5)
    assert abs(loss - float(torch.nn.functional.cross_entropy(feats @ w.T, targets))) < 1e-6

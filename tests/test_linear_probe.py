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
    batches = [(f[None, :, None, None].expand(1, 8, 2, 2), y[None]) for f, y in zip(feats, labels, strict=True)]
    loss = probe_head(model, batches)
    assert loss < 0.15
    assert torch.equal((model(torch.stack([b[0][0] for b in batches])) > 0).float(), labels)


def test_probe_loader_gives_whole_images_at_the_middle_training_scale(tiny_cfg):
    from wsss.data import open_dataset

    cfg = tiny_cfg("cls.resize_long=[40,80]")
    layout = open_dataset(cfg)
    ids = layout.ids("train")[:3]
    for (x, y), img_id in zip(probe_loader(cfg, layout, ids, ((0.5,) * 3, (0.5,) * 3)), ids, strict=True):
        assert max(x.shape[-2:]) == 60 and x.shape[:2] == (1, 3)
        assert torch.equal(y[0], torch.from_numpy(layout.labels(img_id)))


def test_the_softmax_probe_of_masked_class_rows():
    from wsss.models.linear_probe import fit_softmax_head, masked_class_rows
    from wsss.models.recam import masked_class_features

    # two 'images' of 4 channels on 2×2 grids; class c's CAM weight picks channel c
    x = torch.rand(2, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    w_bce = torch.eye(3, 4)
    rows, targets, images = masked_class_rows(PoolMe(), w_bce, [(x[:1], labels[:1]), (x[1:], labels[1:])])
    assert targets.tolist() == [0, 2, 1] and images.tolist() == [0, 0, 1]  # one row per (image, present class)
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


def _separable_rows(n_images=24, d=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (n_images * 2,), generator=g)
    rows = torch.rand(len(targets), d, generator=g) * 0.3 + torch.nn.functional.one_hot(targets, d).float()
    return rows, targets, torch.arange(n_images).repeat_interleave(2)


def test_sgd_replay_starts_from_the_conv_init_and_takes_reference_sgd_steps():
    from wsss.models.linear_probe import replay_sce_sgd
    from wsss.models.recam import per_image_mean_ce

    rows, targets, images = _separable_rows()
    w0, _, _ = replay_sce_sgd(rows, targets, images, 3, steps=1, lr=0.0, momentum=0.0, weight_decay=0.0,
                              poly_power=0.9, seed=5)
    init = torch.empty(3, 6, 1, 1)
    torch.nn.init.kaiming_uniform_(init, a=5 ** 0.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(w0, init.flatten(1)) and w0.abs().max() <= 6 ** -0.5  # nn.Conv2d's U(±1/√D)
    # one step over one batch holding every image: w1 = w0 − lr·∇(per-image mean CE), by hand
    w1, _, _ = replay_sce_sgd(rows, targets, images, 3, steps=1, lr=0.5, momentum=0.0, weight_decay=0.0,
                              poly_power=0.9, batch_size=24, seed=5)
    w = w0.clone().requires_grad_(True)
    per_image_mean_ce(rows @ w.T, targets, images, 24).backward()
    torch.testing.assert_close(w1, w0 - 0.5 * w.grad)


def test_sgd_replay_learns_separable_rows_and_keeps_the_class_sum():
    from wsss.models.linear_probe import replay_sce_sgd

    rows, targets, images = _separable_rows()
    w, loss, acc = replay_sce_sgd(rows, targets, images, 3, steps=300, lr=1.0, momentum=1e-4, weight_decay=0.0,
                                  poly_power=0.9, batch_size=4, seed=0)
    assert acc == 1.0 and loss < 0.3
    again, _, _ = replay_sce_sgd(rows, targets, images, 3, steps=300, lr=1.0, momentum=1e-4, weight_decay=0.0,
                                 poly_power=0.9, batch_size=4, seed=0)
    assert torch.equal(w, again)  # deterministic for a seed (DDP ranks agree)
    init, _, _ = replay_sce_sgd(rows, targets, images, 3, steps=1, lr=0.0, momentum=0.0, weight_decay=0.0,
                                poly_power=0.9, seed=0)
    # the CE gradients of a row sum to zero over the classes: SGD leaves Σ_k w_k where the init put it
    torch.testing.assert_close(w.sum(0), init.sum(0), atol=1e-5, rtol=0)

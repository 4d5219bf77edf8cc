"""Head initialisation by a linear probe of the frozen pretrained trunk (LP-FT: Kumar et al., ICLR 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution").

Why: the references train the bias-free 1×1 head from a random init with SGD (head lr 1.0, effective
momentum 1e-4) for 3,305 steps. On a few hundred images the same recipe gets ~250 steps, and the head is
still near its random init when training stops: on voc530 with the frozen Lite0 trunk (one scale + flip,
τ 0.15), SGD at the head's lr 0.1 for 250 steps reached a loss of 0.280 (the label prior's ≈ 0.29) and
seeds of 4.9 mIoU; lr 1.0 for 250 steps 24.3; lr 1.0 for the reference's 3,300 steps 37.6; Adam (lr 1e-2)
for 250 steps 38.8. The head alone is a convex problem once the trunk is fixed, so we solve it first on
the trunk's pooled features (full-batch Adam, seconds) and then fine-tune everything with the reference
SGD recipe, starting from a head that already localises. With the reference's schedule length the probe
changes little (SGD converges to the same head); with short schedules it is the difference between
noise and seeds. `cls.head_init: random` gives the reference behaviour.

ReCAM's SCE head is different: its maps use the product W_bce ⊙ W_sce, and there how W_sce was reached
matters, not only how well it fits. A full-batch Adam fit moves every coordinate by about its rate and
spreads the product (voc530: 38.2 best against CAM's 40.1); the reference's own SGD schedule, replayed on the
frozen trunk (`replay_sce_sgd`, `cam.train.sce_init: sgd`), keeps W_sce a weighted sum of the masked class
features and the product beats CAM (41.1 frozen, 42.2 ± 0.4 after the fine-tuning, 3 seeds).
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from wsss.progress import progress


@contextmanager
def eval_mode(module: nn.Module):
    """The module in eval mode inside the block, its own mode restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def adam_fit(loss_of, shape, steps: int, lr: float, weight_decay: float) -> tuple[torch.Tensor, float]:
    """Full-batch Adam from zero weights of `shape` on `loss_of(weights)`: (weights, final loss)."""
    weights = torch.zeros(*shape, requires_grad=True)
    opt = torch.optim.Adam([weights], lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = loss_of(weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return weights.detach(), float(loss_of(weights))


@torch.no_grad()
def pooled_features(backbone: nn.Module, batches) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, D] global-average-pooled trunk features, [N, C] labels) of (images [B,3,h,w], labels [B,C])
    batches, the trunk in eval mode (streamed: one batch in memory at a time)."""
    feats, labels = [], []
    with eval_mode(backbone):
        for x, y in batches:
            feats.append(backbone(x).mean((2, 3)))
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, steps: int = 300, lr: float = 1e-2,
                    weight_decay: float = 1e-4) -> tuple[torch.Tensor, float]:
    """Bias-free multi-label head [C, D] on pooled features [N, D] with labels [N, C] (multi-hot):
    the training stage's loss (multilabel soft margin), full-batch Adam from zero, L2 weight decay.
    Returns the weights and the final loss. Deterministic: no sampling."""
    feats, y = features.float(), labels.float()
    return adam_fit(lambda w: F.multilabel_soft_margin_loss(feats @ w.T, y), (y.shape[1], feats.shape[1]),
                    steps, lr, weight_decay)


def probe_head(model, loader, steps: int = 300) -> float:
    """Set `model.classifier` (a bias-free 1×1 conv) to the linear probe of `model.backbone` on the
    (images, labels) batches of `loader`; returns the probe's training loss."""
    feats, labels = pooled_features(model.backbone, progress(loader, desc="train_cls: linear probe of the head"))
    weights, loss = fit_linear_head(feats, labels, steps=steps)
    with torch.no_grad():
        model.classifier.weight.copy_(weights[:, :, None, None])
    return loss


@torch.no_grad()
def masked_class_rows(backbone: nn.Module, w_bce: torch.Tensor, batches) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ReCAM's CAM-masked class features (recam.masked_class_features) of the frozen trunk, one row per
    (image, present class): ([M, D] features, [M] class indices, [M] image indices in batch order)."""
    from wsss.models.recam import masked_class_features

    rows, targets, images, seen = [], [], [], 0
    with eval_mode(backbone):
        for x, y in batches:
            f = masked_class_features(backbone(x), w_bce)  # [B, C, D]
            b, c = torch.nonzero(y > 0, as_tuple=True)
            rows.append(f[b, c])
            targets.append(c)
            images.append(b + seen)
            seen += len(x)
    return torch.cat(rows), torch.cat(targets), torch.cat(images)


def fit_softmax_head(features: torch.Tensor, targets: torch.Tensor, num_classes: int, steps: int = 300,
                     lr: float = 1e-2, weight_decay: float = 1e-4) -> tuple[torch.Tensor, float]:
    """Bias-free softmax head [C, D] on rows [M, D] with class targets [M]: ReCAM's SCE loss (the mean CE
    over the rows; the reference averages per image first, which only reweights images), full-batch Adam
    from zero, then centred over the classes. Returns the weights and the final loss.

    Why centred: a softmax is unchanged when one vector is added to every class's weights, and SGD keeps
    that class-mean where it started (the CE gradients of one row sum to zero over the classes), so the
    reference's SCE head stays near-centred. Adam's per-coordinate steps do not, and the class-mean it
    leaves is arbitrary. It does not matter to the SCE loss, but ReCAM's maps use W_bce ⊙ W_sce, where it
    does: on voc530 the uncentred probe gave seeds of 31.1 / 37.5 (τ 0.21 / best) against CAM's 36.2 / 40.1,
    while the same checkpoint's W_bce alone scored as CAM (38.0 / 38.0 at one scale vs 37.3 / 38.0)."""
    feats = features.float()
    weights, _ = adam_fit(lambda w: F.cross_entropy(feats @ w.T, targets), (num_classes, feats.shape[1]),
                          steps, lr, weight_decay)
    weights = weights - weights.mean(0, keepdim=True)
    return weights, float(F.cross_entropy(feats @ weights.T, targets))


def probe_sce_head(model, loader, steps: int = 300) -> float:
    """Set a ReCAMModule's `sce_head` to the softmax probe of its frozen trunk's masked class features
    (masks from its current W_bce); returns the probe's training loss."""
    w_bce = model.classifier.weight.flatten(1).detach()
    rows, targets, _ = masked_class_rows(model.backbone, w_bce, progress(loader, desc="train_recam: probe of the SCE head"))
    weights, loss = fit_softmax_head(rows, targets, w_bce.shape[0], steps=steps)
    with torch.no_grad():
        model.sce_head.weight.copy_(weights[:, :, None, None])
    return loss


def replay_sce_sgd(rows: torch.Tensor, targets: torch.Tensor, images: torch.Tensor, num_classes: int, steps: int,
                   lr: float, momentum: float, weight_decay: float, poly_power: float, batch_size: int = 16,
                   seed: int = 0) -> tuple[torch.Tensor, float, float]:
    """ReCAM's SCE head trained the way the reference trains it, on fixed masked class rows: the bias-free
    1×1 conv's default init (kaiming-uniform, a = √5), SGD with the recipe's momentum and L2 weight decay,
    the poly schedule over `steps`, batches of `batch_size` images (shuffled each pass, the last partial
    batch dropped) and the per-image mean CE of `recam.sce_loss`. Deterministic for a seed.
    Returns (weights [C, D], loss over all rows, accuracy over all rows)."""
    from wsss.models.classifier import poly_lambda
    from wsss.models.recam import per_image_mean_ce

    g = torch.Generator().manual_seed(seed)
    weights = torch.empty(num_classes, rows.shape[1], 1, 1)
    nn.init.kaiming_uniform_(weights, a=math.sqrt(5), generator=g)  # nn.Conv2d's own init
    weights = weights.flatten(1).requires_grad_(True)
    opt = torch.optim.SGD([weights], lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, poly_lambda(steps, poly_power))
    owners = torch.unique(images)  # images with at least one present class
    per_pass = max(len(owners) // batch_size, 1)
    rows = rows.float()
    with torch.enable_grad():
        for t in range(steps):
            if t % per_pass == 0:
                order = owners[torch.randperm(len(owners), generator=g)]
            chosen = order[(t % per_pass) * batch_size:(t % per_pass + 1) * batch_size]
            picked = torch.isin(images, chosen)
            _, local = torch.unique(images[picked], return_inverse=True)
            loss = per_image_mean_ce(rows[picked] @ weights.T, targets[picked], local, len(chosen))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        logits = rows @ weights.T
        return (weights.detach(), float(F.cross_entropy(logits, targets)),
                float((logits.argmax(1) == targets).float().mean()))


def sgd_sce_head(model, loader, steps: int, lr: float, momentum: float, weight_decay: float, poly_power: float,
                 batch_size: int, seed: int) -> tuple[float, float]:
    """Set a ReCAMModule's `sce_head` to `replay_sce_sgd` on its frozen trunk's masked class features (masks
    from its current W_bce): the reference's SCE schedule, replayed before a fine-tuning too short to hold it.
    Returns the head's (loss, accuracy) on those rows."""
    w_bce = model.classifier.weight.flatten(1).detach()
    rows, targets, images = masked_class_rows(
        model.backbone, w_bce, progress(loader, desc="train_recam: SCE head, reference SGD schedule"))
    weights, loss, acc = replay_sce_sgd(rows, targets, images, w_bce.shape[0], steps, lr, momentum, weight_decay,
                                        poly_power, batch_size, seed)
    with torch.no_grad():
        model.sce_head.weight.copy_(weights[:, :, None, None])
    return loss, acc

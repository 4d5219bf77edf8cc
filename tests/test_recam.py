"""ReCAM: masked features and SCE loss against loop versions; map weights; a few training steps."""
import torch
import torch.nn.functional as F

from wsss.models.classifier import ClassifierModule
from wsss.models.recam import ReCAMModule, masked_class_features, sce_loss
from wsss.stages.train_recam import from_classifier


def _loop_masked(features, w_bce):
    b, d, h, w = features.shape
    out = torch.zeros(b, w_bce.shape[0], d)
    for i in range(b):
        for c in range(w_bce.shape[0]):
            cam = torch.relu((w_bce[c][:, None, None] * features[i]).sum(0))
            cam = cam / (cam.max() + 1e-5)
            out[i, c] = (cam[None] * features[i]).sum((1, 2)) / (h * w)  # mean over all positions
    return out


def _loop_sce(class_features, w_sce, labels):
    per_image = []
    for i in range(labels.shape[0]):
        present = torch.nonzero(labels[i]).flatten()
        if len(present) == 0:
            continue
        losses = [F.cross_entropy((w_sce @ class_features[i, c])[None], c[None]) for c in present]
        per_image.append(torch.stack(losses).mean())
    return torch.stack(per_image).mean()


def test_masked_features_equal_the_loop_version():
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(3, 8, 5, 6, generator=g)
    w = torch.randn(4, 8, generator=g)
    torch.testing.assert_close(masked_class_features(feats, w), _loop_masked(feats, w), rtol=1e-5, atol=1e-6)


def test_sce_loss_equals_the_loop_version_present_classes_only():
    g = torch.Generator().manual_seed(1)
    cf = torch.randn(3, 4, 8, generator=g)
    w = torch.randn(4, 8, generator=g)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]])  # image 1 has no label: skipped
    loss, acc = sce_loss(cf, w, labels)
    torch.testing.assert_close(loss, _loop_sce(cf, w, labels))
    assert 0 <= acc <= 1


def test_gradient_of_sce_reaches_backbone_features_and_w_bce():
    feats = torch.rand(2, 8, 4, 4, requires_grad=True)
    w_bce = torch.randn(3, 8, requires_grad=True)
    loss, _ = sce_loss(masked_class_features(feats, w_bce), torch.randn(3, 8), torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    loss.backward()
    assert feats.grad.abs().sum() > 0 and w_bce.grad.abs().sum() > 0  # no detach on the mask


def test_map_weights_are_the_elementwise_product():
    model = ReCAMModule(5, "resnet18")
    w_bce, w_sce = model.classifier.weight.flatten(1), model.sce_head.weight.flatten(1)
    assert torch.equal(model.cam_weights("product"), w_bce * w_sce)
    assert torch.equal(model.cam_weights("bce"), w_bce)


def test_from_classifier_keeps_the_classifier_weights():
    base = ClassifierModule(5, "resnet18", freeze_bn_stats=False)
    from omegaconf import OmegaConf

    t = OmegaConf.create({"lr": 1e-4, "head_lr_mult": 1, "sce_lr": 1e-3, "loss_weight": 1.0, "weight_decay": 1e-4,
                          "momentum": 1e-4, "poly_power": 0.9, "optimizer": "adamw"})
    model = from_classifier(base, t)
    assert torch.equal(model.classifier.weight, base.classifier.weight)
    assert torch.equal(model.backbone.layer4[0].conv1.weight, base.backbone.layer4[0].conv1.weight)
    assert model.hparams.freeze_bn_stats is False


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    model = ReCAMModule(4, "resnet18", freeze_bn_stats=False)
    x = torch.randn(4, 3, 64, 64)
    y = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]])
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def loss_now():
        feats = model.backbone(x)
        logits = model.classifier(feats.mean((2, 3), keepdim=True)).flatten(1)
        sce, _ = sce_loss(masked_class_features(feats, model.classifier.weight.flatten(1)),
                          model.sce_head.weight.flatten(1), y)
        return F.multilabel_soft_margin_loss(logits, y) + sce

    first = loss_now()
    for _ in range(10):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    assert loss_now().item() < first.item()

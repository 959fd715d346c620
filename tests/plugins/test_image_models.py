"""The image models under transfer plans: which entries a plan copies and freezes, that frozen
entries stay put through minibatch training, and that a fresh head is never inherited."""

from __future__ import annotations

import pytest
import torch

from ptbench.api import Split, TrainBudget, TransferPlan
from ptbench.tasks.images.models import ResNet18, SmallCNN, build_image_model, pool_after
from ptbench.run.training import train


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cnn(seed: int, classes: int = 5, inherit_head: bool = False, depth: int = 4) -> SmallCNN:
    return build_image_model("cnn", 1, 8, classes, gen(seed), width=8, depth=depth, inherit_head=inherit_head)


def layer_params(model) -> list[tuple[str, ...]]:
    return [layer.params for layer in model.transfer_layers()]


def test_small_cnn_shapes_and_layers():
    model = cnn(0)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 5)
    names = [layer.name for layer in model.transfer_layers()]
    assert names == ["conv1", "conv2", "conv3", "conv4", "head"]
    assert [layer.head for layer in model.transfer_layers()] == [False] * 4 + [True]
    # every parameter belongs to exactly one transfer layer
    listed = [p for params in layer_params(model) for p in params]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    assert pool_after(6, 8) == [False, True, False, True, False, False]  # never below 2x2
    assert SmallCNN(3, 32, 10, gen(0), width=4, depth=3)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_init_comes_from_the_generator():
    a, b, c = cnn(1), cnn(1), cnn(2)
    for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb), name
        if pa.dim() > 1:
            assert not torch.equal(pa, pc), name


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_partial_layers_copies_exactly_the_first_k_layers(k):
    source, target = cnn(0), cnn(1)
    fresh = {n: p.detach().clone() for n, p in target.named_parameters()}
    plan = TransferPlan.layers(source, target, count=k, freeze=True)
    plan.apply(source, target)
    layers = target.transfer_layers()
    inherited = {p for layer in layers[:k] for p in layer.params}
    src = dict(source.named_parameters())
    for name, param in target.named_parameters():
        if name in inherited:
            assert torch.equal(param, src[name]), name
            assert plan.copy[name].all() and plan.freeze[name].all(), name
        else:
            assert torch.equal(param, fresh[name]), name
            assert name not in plan.copy or not plan.copy[name].any(), name


def test_head_is_not_inherited_when_classes_differ_and_is_when_they_match():
    source, target = cnn(0, inherit_head=False), cnn(1, inherit_head=False)
    plan = TransferPlan.full(source, target)
    assert "head.weight" not in plan.copy and "convs.3.weight" in plan.copy
    # different numbers of classes: the heads do not even have the same shape
    assert "head.weight" not in TransferPlan.full(cnn(0, classes=4), cnn(1, classes=5)).copy
    same = TransferPlan.full(cnn(0, inherit_head=True), cnn(1, inherit_head=True))
    assert same.copy["head.weight"].all()


def test_partial_filters_copies_chosen_filters_whole_and_nothing_else():
    source, target = cnn(0), cnn(1)
    fresh = {n: p.detach().clone() for n, p in target.named_parameters()}
    plan = TransferPlan.filters(source, target, fraction=0.5, rng=gen(3))
    plan.apply(source, target)
    src = dict(source.named_parameters())
    for layer in target.transfer_layers():
        if layer.head:
            assert all(p not in plan.copy for p in layer.params)
            continue
        weight = plan.copy[layer.params[0]]
        chosen = weight.reshape(weight.shape[0], -1).all(dim=1)
        # each chosen filter is copied whole: all its input channels and its bias
        assert torch.equal(weight.reshape(weight.shape[0], -1).any(dim=1), chosen)
        assert int(chosen.sum()) == layer.filter_shape[0] // 2
        assert torch.equal(plan.copy[layer.params[1]], chosen)
        for pname in layer.params:
            param = dict(target.named_parameters())[pname]
            assert torch.equal(param[chosen], src[pname][chosen])
            assert torch.equal(param[~chosen], fresh[pname][~chosen])
    # every layer inherits exactly the fraction of its weights (no next-layer slices)
    assert plan.fraction_copied() == pytest.approx(0.5, abs=0.01)


def test_partial_filters_nests_across_fractions():
    source, target = cnn(0), cnn(1)
    small = TransferPlan.filters(source, target, fraction=0.25, rng=gen(7))
    large = TransferPlan.filters(source, target, fraction=0.75, rng=gen(7))
    for name, mask in small.copy.items():
        assert not (mask & ~large.copy[name]).any(), name


def test_frozen_entries_do_not_move_during_minibatch_training():
    source, target = cnn(0), cnn(1)
    plan = TransferPlan.filters(source, target, fraction=0.5, rng=gen(2), freeze=True)
    plan.apply(source, target)
    before = {n: p.detach().clone() for n, p in target.named_parameters()}
    g = gen(5)
    data = Split(torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 5, (40,), generator=g))
    budget = TrainBudget(steps=30, lr=0.01, optimizer="adam", loss="cross_entropy", batch_size=8, weight_decay=0.01)
    train(target, data, budget, gen(6), plan)
    for name, param in target.named_parameters():
        frozen = plan.freeze.get(name, torch.zeros_like(param, dtype=torch.bool))
        assert torch.equal(param[frozen], before[name][frozen]), name
        assert not torch.equal(param[~frozen], before[name][~frozen]), name  # the rest trained


def test_resnet18_layers_and_plans():
    model = ResNet18(3, 10, gen(0), width=4)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    layers = model.transfer_layers()
    assert len(layers) == 18 and layers[-1].head and layers[0].name == "stem"
    listed = [p for layer in layers for p in layer.params]
    assert sorted(listed) == sorted(n for n, _ in model.named_parameters())
    # a downsampling block's conv2 layer owns its shortcut: they write the same channels
    assert "blocks.2.shortcut.0.weight" in layers[6].params
    source, target = ResNet18(3, 6, gen(1), width=4), ResNet18(3, 4, gen(2), width=4)
    plan = TransferPlan.filters(source, target, fraction=0.5, rng=gen(3))
    plan.check_against(target)
    conv = plan.copy["blocks.0.conv1.weight"].reshape(4, -1).all(dim=1)
    assert torch.equal(plan.copy["blocks.0.bn1.weight"], conv)  # BatchNorm scale travels with its filter
    assert "fc.weight" not in plan.copy
    k5 = TransferPlan.layers(source, target, count=5)
    assert set(k5.copy) == {p for layer in target.transfer_layers()[:5] for p in layer.params}


def test_resnet18_trains_a_step_with_frozen_stem():
    source, target = ResNet18(3, 3, gen(1), width=4), ResNet18(3, 3, gen(2), width=4)
    plan = TransferPlan.layers(source, target, count=1, freeze=True)
    plan.apply(source, target)
    g = gen(4)
    data = Split(torch.randn(16, 3, 16, 16, generator=g), torch.randint(0, 3, (16,), generator=g))
    budget = TrainBudget(steps=3, lr=0.01, optimizer="sgd", loss="cross_entropy", batch_size=8, momentum=0.9)
    train(target, data, budget, gen(5), plan)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert not torch.equal(target.blocks[0].conv1.weight, source.blocks[0].conv1.weight)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resnet18_on_cuda_matches_plan_semantics():
    source = ResNet18(3, 5, gen(1), width=16).cuda()
    target = ResNet18(3, 5, gen(2), width=16).cuda()
    plan = TransferPlan.layers(source, target, count=3, freeze=True)
    plan.apply(source, target)
    g = gen(4)
    data = Split(torch.randn(64, 3, 32, 32, generator=g).cuda(), torch.randint(0, 5, (64,), generator=g).cuda())
    budget = TrainBudget(steps=5, lr=0.01, optimizer="adam", loss="cross_entropy", batch_size=32)
    train(target, data, budget, gen(5), plan)
    for layer in target.transfer_layers()[:3]:
        for name in layer.params:
            assert torch.equal(dict(target.named_parameters())[name], dict(source.named_parameters())[name])

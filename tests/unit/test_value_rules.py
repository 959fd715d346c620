"""Plans that say where the target starts (value rules), how fast each entry trains
(learning-rate scales), and the batch-regulariser hook with the models' feature hooks: the
semantics of each, and what `check_against` refuses."""

from __future__ import annotations

import copy

import pytest
import torch

from ptbench.api import RegularizerBatch, Split, Strategy, TrainBudget, TransferModel, TransferPlan, ValueRule
from ptbench.rng import RandomStreams
from ptbench.run.training import train
from ptbench.tasks.images.models import ResNet18, SmallCNN
from ptbench.tasks.signal_noise.model import TwoLayerReLUCNN

D, M = 12, 4


def models(seed: int = 0) -> tuple[TwoLayerReLUCNN, TwoLayerReLUCNN]:
    streams = RandomStreams(seed)
    donor = TwoLayerReLUCNN(D, M, 1.0, streams.torch("source-init"))
    target = TwoLayerReLUCNN(D, M, 0.1, streams.torch("target-init"))
    return donor, target


def half_filters() -> torch.Tensor:
    """[2, M, D] bool: filters 0 and 2 of each class block inherited, whole."""
    rows = torch.zeros(2, M, dtype=torch.bool)
    rows[:, ::2] = True
    return rows[..., None].expand(2, M, D).clone()


def started(plan: TransferPlan, donor, target) -> torch.Tensor:
    model = copy.deepcopy(target)
    plan.check_against(model)
    plan.apply(donor, model)
    return model.W.detach()


# --------------------------------------------------------------------------- value rules


def test_a_copy_mask_alone_is_the_plain_copy_and_mix_1_0_is_the_same_bit_for_bit():
    donor, target = models()
    mask = half_filters()
    plain = started(TransferPlan(copy={"W": mask}), donor, target)
    assert torch.equal(plain, torch.where(mask, donor.W.detach(), target.W.detach()))
    assert torch.equal(started(TransferPlan(copy={"W": mask.clone()}).mix(1.0, 0.0), donor, target), plain)


def test_mix_per_entry_and_per_filter_coefficients():
    donor, target = models()
    mask = half_filters()
    Dw, Fw = donor.W.detach(), target.W.detach()
    W = started(TransferPlan(copy={"W": mask}).mix(0.4, 0.1), donor, target)
    assert torch.allclose(W[mask], 0.4 * Dw[mask] + 0.1 * Fw[mask])
    assert torch.equal(W[~mask], Fw[~mask])
    # one number per filter ([2, M]): the same start
    rows = mask[..., 0]
    per_filter = ValueRule.mix(donor=torch.where(rows, 0.4, 0.0), fresh=torch.where(rows, 0.1, 1.0))
    assert torch.equal(started(TransferPlan(copy={"W": mask}, init={"W": per_filter}), donor, target), W)
    # keep-fresh and copy as rules
    assert torch.equal(started(TransferPlan(init={"W": ValueRule.keep_fresh()}), donor, target), Fw)
    everything = torch.ones(2, M, D, dtype=torch.bool)
    assert torch.equal(started(TransferPlan(copy={"W": everything}, init={"W": ValueRule.copy()}), donor, target), Dw)


def test_project_out_removes_the_span_of_orthonormal_rows_from_every_inherited_filter():
    donor, target = models()
    mask = half_filters()
    rows = mask[..., 0]
    q, _ = torch.linalg.qr(torch.randn(D, 2, generator=torch.Generator().manual_seed(1)))
    basis = q.T.contiguous()  # [2, D] orthonormal
    rule = ValueRule.project_out(basis, donor=rows.float(), fresh=(~rows).float())
    W = started(TransferPlan(copy={"W": mask}, init={"W": rule}), donor, target)
    Dw = donor.W.detach()
    expected = Dw - (Dw @ basis.T) @ basis
    assert torch.allclose(W[rows], expected[rows], atol=1e-6)
    assert float((W[rows] @ basis.T).abs().max()) < 1e-5  # orthogonal to the removed span
    assert torch.equal(W[~rows], target.W.detach()[~rows])
    # the same projection as a matrix
    matrix = torch.eye(D) - basis.T @ basis
    as_matrix = ValueRule.linear(matrix, donor=rows.float(), fresh=(~rows).float())
    assert torch.allclose(started(TransferPlan(copy={"W": mask}, init={"W": as_matrix}), donor, target), W, atol=1e-6)


def test_offsets_are_given_values():
    donor, target = models()
    offset = torch.full((2, M, D), 0.25)
    W = started(TransferPlan(init={"W": ValueRule(donor=0.0, fresh=0.0, offset=offset)}), donor, target)
    assert torch.equal(W, offset)


def test_filter_masks_are_the_draws_of_filters():
    donor, target = models()
    masks = TransferPlan.filter_masks(donor, target, 0.5, torch.Generator().manual_seed(3))
    plan = TransferPlan.filters(donor, target, 0.5, rng=torch.Generator().manual_seed(3))
    assert torch.equal(plan.copy["W"], masks["conv"][..., None].expand(2, M, D))


@pytest.mark.parametrize(
    "plan, words",
    [
        (TransferPlan(init={"V": ValueRule.copy()}), "unknown parameter 'V'"),
        (TransferPlan(copy={"W": half_filters()}, init={"W": ValueRule.mix(torch.ones(3), 0.0)}), "has shape (3,)"),
        (TransferPlan(copy={"W": half_filters()}, init={"W": ValueRule.mix(float("nan"), 0.0)}), "not finite"),
        (TransferPlan(copy={"W": half_filters()}, init={"W": ValueRule.mix(0.5, 0.5)}), "reads the donor outside its declared entries"),
        (TransferPlan(init={"W": ValueRule.copy()}), "reads the donor outside its declared entries"),
        (TransferPlan(copy={"W": half_filters()}, init={"W": ValueRule.project_out(torch.ones(1, D), half_filters().float())}), "not orthonormal"),
        (TransferPlan(copy={"W": half_filters()}, init={"W": ValueRule.project_out(torch.ones(1, 5) / 5**0.5)}), "no trailing dims"),
        (TransferPlan(copy={"W": half_filters()}, init={"W": ValueRule(remove=torch.eye(1, D), matrix=torch.eye(D))}), "both remove and matrix"),
        (TransferPlan(lr_scale={"W": torch.tensor(-0.5)}), "negative"),
        (TransferPlan(lr_scale={"W": torch.full((2, M), float("inf"))}), "not finite"),
        (TransferPlan(lr_scale={"W": torch.ones(M)}), "learning-rate scale for 'W' has shape (4,)"),
    ],
    ids=["unknown", "shape", "nan", "outside", "undeclared", "orthonormal", "row-length", "two-projections", "negative-lr", "inf-lr", "lr-shape"],
)
def test_check_against_refuses_bad_rules_and_scales(plan, words):
    _, target = models()
    with pytest.raises(ValueError) as err:
        plan.check_against(target)
    assert words in str(err.value)


def test_a_projection_reads_the_whole_filter_so_a_partly_declared_filter_is_refused():
    _, target = models()
    mask = torch.zeros(2, M, D, dtype=torch.bool)
    mask[..., : D // 2] = True  # half of every filter's entries
    rule = ValueRule.project_out(torch.ones(D) / D**0.5, donor=mask.float(), fresh=(~mask).float())
    with pytest.raises(ValueError, match="reads the donor outside"):
        TransferPlan(copy={"W": mask}, init={"W": rule}).check_against(target)
    # without the projection the same coefficients read only declared entries
    TransferPlan(copy={"W": mask}, init={"W": ValueRule.mix(mask.float(), (~mask).float())}).check_against(target)


# --------------------------------------------------------------------------- learning-rate scales


@pytest.fixture(scope="module")
def data() -> Split:
    g = torch.Generator().manual_seed(5)
    y = torch.where(torch.rand(32, generator=g) < 0.5, 1.0, -1.0)
    return Split(torch.randn(32, 2, D, generator=g) + y[:, None, None], y)


GD = TrainBudget(steps=5, lr=0.5)


def trained(plan: TransferPlan, data: Split, budget: TrainBudget = GD, steps=None) -> torch.Tensor:
    _, target = models()
    train(target, data, budget, torch.Generator().manual_seed(0), plan)
    return target.W.detach()


def test_scale_zero_is_frozen_and_scale_one_is_no_scale_bit_for_bit(data):
    rows = half_filters()[..., 0]
    frozen = trained(TransferPlan(freeze={"W": half_filters()}), data)
    assert torch.equal(trained(TransferPlan(lr_scale={"W": torch.where(rows, 0.0, 1.0)}), data), frozen)
    assert torch.equal(trained(TransferPlan(lr_scale={"W": torch.tensor(1.0)}), data), trained(TransferPlan(), data))


@pytest.mark.parametrize(
    "budget",
    [
        TrainBudget(steps=1, lr=0.5),
        TrainBudget(steps=1, lr=0.1, optimizer="sgd", batch_size=8, momentum=0.9, weight_decay=0.1),
        TrainBudget(steps=1, lr=0.01, optimizer="adam", batch_size=8, weight_decay=0.5),
    ],
    ids=["gd", "sgd-momentum-wd", "adamw"],
)
def test_a_scale_multiplies_each_step_exactly_as_a_per_entry_learning_rate(data, budget):
    _, start = models()
    W0 = start.W.detach()
    scale = torch.tensor([[0.5, 2.0, 0.25, 1.0], [0.0, 1.0, 3.0, 0.5]])
    plain = trained(TransferPlan(), data, budget) - W0
    scaled = trained(TransferPlan(lr_scale={"W": scale}), data, budget) - W0
    assert torch.allclose(scaled, scale[..., None] * plain, rtol=1e-5, atol=1e-7)
    # the same learning rate set on the budget: one step of GD with lr * s equals scale s
    if budget.optimizer == "gd":
        doubled = trained(TransferPlan(), data, TrainBudget(steps=1, lr=2 * budget.lr)) - W0
        assert torch.allclose(scaled[0, 1], doubled[0, 1], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- batch regularisers


class Spy(Strategy):
    name = "spy"
    needs_donor_features = True
    seen: list = []

    def plan(self, source, target, rng):
        return TransferPlan.full(source, target)

    def batch_regularizer(self, batch: RegularizerBatch):
        type(self).seen.append(batch)
        return (batch.features["conv"] - batch.donor_features["conv"]).pow(2).mean()


class Vector(Spy):
    name = "vector"

    def batch_regularizer(self, batch):
        return batch.output  # one number per example: not a penalty


def test_a_batch_regularizer_sees_the_batch_the_features_and_the_donors_features(data):
    donor, target = models()
    plan = TransferPlan.full(donor, target)
    plan.apply(donor, target)
    before = {n: p.detach().clone() for n, p in donor.named_parameters()}
    Spy.seen = []
    strategy = Spy()
    assert strategy.customises_training()
    train(target, data, TrainBudget(steps=3, lr=0.5), torch.Generator(), plan, strategy, reference={}, donor=donor)
    assert [b.step for b in Spy.seen] == [0, 1, 2]
    first = Spy.seen[0]
    assert first.x is data.x and first.y is data.y and first.plan is plan and first.model is target
    assert set(first.features) == set(target.feature_layers()) == {"conv"}
    assert first.features["conv"].requires_grad and not first.donor_features["conv"].requires_grad
    assert torch.allclose(first.donor_features["conv"], donor.features(data.x)["conv"])
    assert first.output.shape == (len(data.y),)
    assert all(torch.equal(p.detach(), before[n]) for n, p in donor.named_parameters())
    assert donor.training  # back in the mode it was in


def test_a_batch_regularizer_must_return_a_scalar(data):
    donor, target = models()
    with pytest.raises(ValueError, match=r"batch_regularizer returned \(32,\), not a scalar tensor"):
        train(target, data, GD, torch.Generator(), TransferPlan(), Vector(), reference={}, donor=donor)


def test_without_needs_donor_features_the_donor_features_are_none(data):
    class Own(Strategy):
        name = "own"

        def plan(self, source, target, rng):
            return TransferPlan.nothing()

        def batch_regularizer(self, batch):
            assert batch.donor_features is None
            return None

    _, target = models()
    train(target, data, TrainBudget(steps=2, lr=0.5), torch.Generator(), TransferPlan(), Own(), reference={})


# --------------------------------------------------------------------------- feature hooks


@pytest.mark.parametrize(
    "build, x",
    [
        (lambda g: TwoLayerReLUCNN(D, M, 1.0, g), torch.randn(5, 2, D)),
        (lambda g: SmallCNN(1, 8, 3, g, width=4, depth=3), torch.randn(5, 1, 8, 8)),
        (lambda g: ResNet18(3, 3, g, width=4), torch.randn(5, 3, 8, 8)),
    ],
    ids=["two-layer-cnn", "small-cnn", "resnet18"],
)
def test_forward_features_is_the_forward_pass_with_each_layers_output(build, x):
    model = build(torch.Generator().manual_seed(0)).eval()
    output, features = model.forward_features(x)
    assert torch.equal(output, model(x))
    assert list(features) == model.feature_layers()
    heads = {layer.name for layer in model.transfer_layers() if layer.head}
    assert set(features) == {layer.name for layer in model.transfer_layers()} - heads
    assert all(f.shape[0] == len(x) for f in features.values())
    assert model.features(x).keys() == features.keys()


def test_a_model_without_the_feature_hook_says_so_and_head_params_names_the_head():
    class Bare(TransferModel):
        def transfer_layers(self):
            return []

    with pytest.raises(NotImplementedError, match="has no feature hook"):
        Bare().forward_features(torch.zeros(1))
    cnn = SmallCNN(1, 8, 3, torch.Generator().manual_seed(0), width=4, depth=2)
    assert cnn.head_params() == {"head.weight", "head.bias"}
    assert TwoLayerReLUCNN(D, M, 1.0, torch.Generator()).head_params() == set()

"""The signal-noise data model: what every example is made of, and what the seed fixes."""

from __future__ import annotations

import pytest
import torch

from ptbench.rng import RandomStreams

ATOL = 1e-4


def test_shapes_and_label_values(make_task):
    task = make_task(d=120, patches=3, n_source=30, n_target=12, n_test=50)
    streams = RandomStreams(0)
    source, target = task.data("source", streams), task.data("target", streams)
    assert source.train.x.shape == (30, 3, 120) and source.train.y.shape == (30,)
    assert target.train.x.shape == (12, 3, 120) and target.train.y.shape == (12,)
    assert source.test.x.shape == target.test.x.shape == (50, 3, 120)
    for split in (source.train, source.test, target.train, target.test):
        assert set(split.y.unique().tolist()) <= {-1.0, 1.0}
        assert split.x.dtype == torch.float32
    assert source.extras["signal_position"].shape == (30,)
    assert int(source.extras["signal_position"].max()) <= 2


def test_directions_are_orthonormal_and_shared_by_source_and_target(make_task):
    task = make_task(d=150)
    streams = RandomStreams(3)
    source, target = task.data("source", streams), task.data("target", streams)
    dirs = source.extras["directions"]
    assert dirs.shape == (3, 150)
    assert torch.allclose(dirs @ dirs.T, torch.eye(3), atol=1e-5)
    assert torch.equal(dirs, target.extras["directions"])
    assert (source.extras["v_index"], target.extras["v_index"]) == (1, 2)
    # another seed, other directions
    other = task.data("source", RandomStreams(4)).extras["directions"]
    assert not torch.allclose(other, dirs)


@pytest.mark.parametrize("role, v, norm", [("source", 1, 1.5), ("target", 2, 0.7)])
def test_signal_patch_is_y_times_u_plus_v(make_task, role, v, norm):
    task = make_task(shared=2.0, specific=1.5, target_specific=0.7, label_flip=0.0, patches=3, n_source=60, n_target=60)
    data = task.data(role, RandomStreams(1))
    dirs = data.extras["directions"]
    signal = 2.0 * dirs[0] + norm * dirs[v]
    x, y, pos = data.train.x, data.train.y, data.extras["signal_position"]
    patch = x[torch.arange(len(y)), pos]
    assert torch.allclose(patch, y[:, None] * signal, atol=1e-6)
    assert len(set(pos.tolist())) == 3  # the position varies over examples


@pytest.mark.parametrize("role, v", [("source", 1), ("target", 2)])
def test_noise_is_orthogonal_to_u_and_v_k_with_the_declared_scale(make_task, role, v):
    d, noise = 100, 0.5 if role == "source" else 1.5
    task = make_task(d=d, patches=3, source_noise=0.5, target_noise=1.5, n_source=400, n_target=400)
    data = task.data(role, RandomStreams(2))
    dirs = data.extras["directions"]
    x, pos = data.train.x, data.extras["signal_position"]
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[torch.arange(len(x)), pos] = False
    xi = x[mask]  # every noise patch, [n * (patches - 1), d]
    assert xi.shape == (800, d)
    assert (xi @ dirs[0]).abs().max() < ATOL
    assert (xi @ dirs[v]).abs().max() < ATOL
    # N(0, sigma^2 (I - P)): E|xi|^2 = sigma^2 (d - 2)
    mean_sq = float((xi**2).sum(dim=1).mean())
    assert mean_sq == pytest.approx(noise**2 * (d - 2), rel=0.05)
    # the other task's specific direction is not projected out: target noise fires on v_1
    other = 3 - v
    assert float((xi @ dirs[other]).pow(2).mean()) == pytest.approx(noise**2, rel=0.25)


def test_label_flip_rate_on_a_large_sample_and_clean_test_labels(make_task):
    task = make_task(d=8, patches=2, n_source=20000, n_test=2000, label_flip=0.2)
    data = task.data("source", RandomStreams(5))
    u = data.extras["directions"][0]
    x, y, pos = data.train.x, data.train.y, data.extras["signal_position"]
    clean = torch.sign(x[torch.arange(len(y)), pos] @ u)  # shared > 0: the sign along u is y
    flip_rate = float((clean != y).float().mean())
    assert flip_rate == pytest.approx(0.2, abs=0.015)  # 5 standard errors
    assert float((y == 1).float().mean()) == pytest.approx(0.5, abs=0.02)
    # test labels are never flipped: every test example's label is the sign of its signal
    tx, ty = data.test.x, data.test.y
    along = (tx @ u)  # [n, patches]; the noise patches have no u component
    signed = along.sum(dim=1)
    assert torch.equal(torch.sign(signed), ty)


def test_no_flip_when_label_flip_is_zero(make_task):
    task = make_task(d=8, n_source=2000, label_flip=0.0)
    data = task.data("source", RandomStreams(0))
    x, y, pos = data.train.x, data.train.y, data.extras["signal_position"]
    u = data.extras["directions"][0]
    assert torch.equal(torch.sign(x[torch.arange(len(y)), pos] @ u), y)


def test_same_seed_same_data_other_seed_other_data(make_task):
    task = make_task()
    a = task.data("target", RandomStreams(7))
    b = task.data("target", RandomStreams(7))
    c = task.data("target", RandomStreams(8))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, c.train.x)


def test_source_and_target_data_are_different_draws(make_task):
    task = make_task(n_source=40, n_target=40)
    streams = RandomStreams(0)
    source, target = task.data("source", streams), task.data("target", streams)
    assert not torch.allclose(source.train.x, target.train.x)


def test_model_shape_and_initial_scale(make_task):
    task = make_task(d=100, m=10, sigma0=0.01)
    a = task.model("target", RandomStreams(0).torch("target-init"))
    b = task.model("target", RandomStreams(0).torch("target-init"))
    assert a.W.shape == (2, 10, 100)
    assert torch.equal(a.W, b.W)  # the init is a function of (seed, role)
    assert float(a.W.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert a.transfer_layers()[0].filter_shape == (2, 10)


def test_diagnostics_measure_signal_learning_of_a_trained_model(make_task):
    from ptbench.run.training import train

    task = make_task(label_flip=0.0)
    streams = RandomStreams(0)
    data = task.data("source", streams)
    model = task.model("source", streams.torch("source-init"))
    before = task.diagnostics(model, data, None)
    train(model, data.train, task.budget("source"), streams.torch("b"))
    after = task.diagnostics(model, data, None)
    # training on the source aligns filters with +u (class +1) and -u (class -1): the
    # oriented projection on u grows from about zero to clearly positive
    assert abs(before["u_mean_all"]) < 0.05
    assert after["u_mean_all"] > 10 * abs(before["u_mean_all"]) and after["u_mean_all"] > 0.1
    assert set(after) >= {"u_max_all", "v1_mean_all", "v2_mean_all", "noise_all"}

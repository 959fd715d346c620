"""SPEC parsing (`name[key=value,...]`), parameter grids, and suite expansion into runs."""

from __future__ import annotations

import pytest

from ptbench.errors import PtbenchError
from ptbench.spec import parse_spec, parse_value
from ptbench.strategies.partial_filters import PartialFilters
from ptbench.strategies.scratch import Scratch
from ptbench.sweep.plan import expand, load_suite, parse_suite
from ptbench.tasks.signal_noise import SignalNoise

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("true", True),
        ("False", False),
        ("none", None),
        ("null", None),
        ("3", 3),
        ("-2", -2),
        ("0.5", 0.5),
        ("1e-2", 0.01),
        ("adam", "adam"),
        ("'quoted'", "quoted"),
        (" 7 ", 7),
    ],
)
def test_parse_value_reads_what_a_user_types(text, expected):
    value = parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_parse_spec_bare_name():
    assert parse_spec("  scratch ") == ("scratch", {})


def test_parse_spec_scalars_and_lists():
    name, fixed = parse_spec("partial-filters[fraction=[0.25, 0.5], freeze=true]")
    assert name == "partial-filters"
    assert fixed == {"fraction": [0.25, 0.5], "freeze": [True]}


def test_parse_spec_types():
    _, fixed = parse_spec("signal-noise[d=100,lr=1e-1,target_specific=none,shared=2]")
    assert fixed == {"d": [100], "lr": [0.1], "target_specific": [None], "shared": [2]}
    assert isinstance(fixed["d"][0], int) and isinstance(fixed["lr"][0], float)


@pytest.mark.parametrize(
    "spec, says",
    [
        ("", "empty SPEC"),
        ("partial-filters[fraction=0.5", "malformed"),
        ("partial-filters]", "malformed"),
        ("fraction=0.5", "malformed"),
        ("[fraction=0.5]", "malformed"),
        ("partial-filters[fraction]", "is not key=value"),
        ("partial-filters[=0.5]", "is not key=value"),
        ("partial-filters[fraction=[0.25,0.5]", "unbalanced '['"),
        ("partial-filters[fraction=0.5]]", "unbalanced ']'"),
        ("partial-filters[fraction=[]]", "empty list"),
    ],
)
def test_malformed_specs_say_how_to_write_one(spec, says):
    with pytest.raises(PtbenchError) as info:
        parse_spec(spec)
    assert says in str(info.value)


# --------------------------------------------------------------------------- instances


def test_defaults_are_the_first_grid_value():
    strategy = PartialFilters()
    assert strategy.values == {"fraction": 0.25, "freeze": False}
    assert strategy.fraction == 0.25 and strategy.freeze is False


def test_values_take_the_type_of_the_default():
    strategy = PartialFilters(fraction=1, freeze="true")
    assert strategy.fraction == 1.0 and isinstance(strategy.fraction, float)
    assert strategy.freeze is True


@pytest.mark.parametrize(
    "cls, values, says",
    [
        (PartialFilters, {"fraction": "half"}, "expects float"),
        (PartialFilters, {"freeze": 3}, "expects bool"),
        (SignalNoise, {"d": 1.5}, "expects int"),
        (SignalNoise, {"d": True}, "expects int"),
        (SignalNoise, {"shared": True}, "expects float"),
    ],
)
def test_wrong_types_are_user_errors(cls, values, says):
    with pytest.raises(PtbenchError, match=says):
        cls(**values)


@pytest.mark.parametrize(
    "cls, values, says",
    [
        (PartialFilters, {"fraction": 1.5}, "fraction must be in"),
        (SignalNoise, {"d": 3}, "d must be at least 4"),
        (SignalNoise, {"label_flip": 0.5}, "label_flip"),
        (SignalNoise, {"lr": 0.0}, "lr must be positive"),
        (SignalNoise, {"target_specific": -1.0}, "target_specific"),
        # target_specific's default is None, so its type is not fixed by the grid: a string
        # must still be a clean user error, not a TypeError from the range check
        (SignalNoise, {"target_specific": "big"}, "target_specific"),
    ],
)
def test_out_of_range_values_are_user_errors_naming_the_instance(cls, values, says):
    with pytest.raises(PtbenchError, match=says) as info:
        cls(**values)
    assert str(info.value).startswith(cls.name)


def test_unknown_parameter_hints_at_the_close_match():
    with pytest.raises(PtbenchError) as info:
        PartialFilters(fracton=0.5)
    message = str(info.value)
    assert "'fracton'" in message and "did you mean 'fraction'?" in message
    assert "fraction, freeze" in message  # lists the valid ones


def test_unknown_parameter_without_close_match_has_no_hint():
    with pytest.raises(PtbenchError) as info:
        PartialFilters.expand({"zzz": [1]})
    assert "did you mean" not in str(info.value)
    assert "zzz" in str(info.value)


def test_strategy_without_parameters_rejects_any():
    with pytest.raises(PtbenchError, match="parameters: none"):
        Scratch(freeze=True)


# --------------------------------------------------------------------------- grids


def test_the_offered_grid_is_the_cartesian_product():
    instances = PartialFilters.grid()
    combos = {(s.fraction, s.freeze) for s in instances}
    assert len(instances) == 6
    assert combos == {(f, z) for f in (0.25, 0.5, 0.75) for z in (False, True)}


def test_a_parameter_left_out_of_a_spec_takes_its_default():
    """The one grid rule (README, CONTRIBUTING, --help): a SPEC sweeps what it names only."""
    assert [(s.fraction, s.freeze) for s in PartialFilters.expand()] == [(0.25, False)]
    instances = PartialFilters.expand(parse_spec("partial-filters[fraction=[0.1,0.9]]")[1])
    assert sorted((s.fraction, s.freeze) for s in instances) == [(0.1, False), (0.9, False)]
    both = PartialFilters.expand(parse_spec("partial-filters[fraction=0.5,freeze=[false,true]]")[1])
    assert sorted((s.fraction, s.freeze) for s in both) == [(0.5, False), (0.5, True)]


def test_instance_name_round_trips_through_parse_spec():
    for strategy in PartialFilters.grid():
        name, fixed = parse_spec(strategy.instance_name)
        again = PartialFilters.expand(fixed)
        assert len(again) == 1 and again[0].key == strategy.key


def test_instance_name_shows_swept_or_non_default_values_only():
    assert Scratch().instance_name == "scratch"
    assert PartialFilters(fraction=0.5).instance_name == "partial-filters[fraction=0.5,freeze=False]"
    task = SignalNoise(d=100)
    assert task.instance_name == "signal-noise[d=100]"


def test_key_names_every_value_and_separates_variants():
    a, b = SignalNoise(d=100), SignalNoise(d=100, shared=1.0)  # shared=1.0 is the default
    assert a.key == b.key
    assert SignalNoise(d=200).key != a.key
    assert '"d": 100' in a.key and '"steps": 1000' in a.key


# --------------------------------------------------------------------------- suites


def test_suite_expands_to_tasks_times_strategies_times_seeds(registry):
    suite = parse_suite(
        {
            "seeds": 3,
            "tasks": ["signal-noise[d=[100,200]]"],
            "strategies": ["scratch", "partial-filters[fraction=0.5,freeze=[false,true]]"],
        },
        "t",
        "t.toml",
    )
    specs = expand(suite, registry)
    # 2 task variants x (1 + 2 strategy variants) x 3 seeds
    assert len(specs) == 2 * 3 * 3
    assert len({s.key for s in specs}) == len(specs)
    assert {s.seed for s in specs} == {0, 1, 2}
    assert {s.task.d for s in specs} == {100, 200}
    assert {s.strategy.instance_name for s in specs} == {
        "scratch",
        "partial-filters[fraction=0.5,freeze=False]",
        "partial-filters[fraction=0.5,freeze=True]",
    }


def test_overrides_and_duplicates(registry):
    suite = parse_suite({"seeds": 5, "tasks": ["signal-noise"], "strategies": ["full"]}, "t", "t.toml")
    specs = expand(suite, registry, tasks=["signal-noise[d=100]", "signal-noise[d=100]"],
                   strategies=["scratch", "scratch"], seeds=2)
    assert [(s.task.d, s.strategy.name, s.seed) for s in specs] == [(100, "scratch", 0), (100, "scratch", 1)]


def test_sweep_seeds_override_the_suite_seeds(registry):
    suite = parse_suite(
        {"seeds": 4, "sweep": [{"tasks": ["signal-noise"], "strategies": ["scratch"], "seeds": 2}]}, "t", "t.toml"
    )
    assert len(expand(suite, registry)) == 2


def test_unknown_names_in_specs_hint_at_the_close_match(registry):
    suite = parse_suite({"tasks": ["signal-noize"], "strategies": ["scratch"]}, "t", "t.toml")
    with pytest.raises(PtbenchError, match="did you mean 'signal-noise'"):
        expand(suite, registry)
    suite = parse_suite({"tasks": ["signal-noise"], "strategies": ["partial-filter"]}, "t", "t.toml")
    with pytest.raises(PtbenchError, match="did you mean 'partial-filters'"):
        expand(suite, registry)


@pytest.mark.parametrize(
    "raw, says",
    [
        ({"seed": 3, "tasks": ["signal-noise"], "strategies": ["scratch"]}, "did you mean 'seeds'"),
        ({"seeds": 0, "tasks": ["signal-noise"], "strategies": ["scratch"]}, "seeds must be a positive integer"),
        ({"seeds": "3", "tasks": ["signal-noise"], "strategies": ["scratch"]}, "seeds must be a positive integer"),
        ({"description": "nothing"}, "nothing to run"),
        ({"tasks": "signal-noise", "strategies": ["scratch"]}, "non-empty list of SPEC strings"),
        ({"tasks": [], "strategies": ["scratch"]}, "non-empty list of SPEC strings"),
        ({"sweep": [{"tasks": ["signal-noise"], "strategies": ["scratch"], "steps": 3}]}, "unknown key 'steps'"),
    ],
)
def test_malformed_suites_are_user_errors(raw, says):
    with pytest.raises(PtbenchError, match=says):
        parse_suite(raw, "bad", "bad.toml")


def test_builtin_quick_suite_expands(registry):
    suite = load_suite("quick")
    specs = expand(suite, registry)
    assert suite.baseline == "scratch"
    assert len(specs) > 0 and all(s.strategy for s in specs)
    assert any(s.strategy.name == "scratch" for s in specs)


def test_unknown_suite_name_or_bad_file(tmp_path):
    with pytest.raises(PtbenchError, match="did you mean 'quick'"):
        load_suite("quik")
    bad = tmp_path / "bad.toml"
    bad.write_text("seeds = [\n")
    with pytest.raises(PtbenchError, match="not valid TOML"):
        load_suite(str(bad))

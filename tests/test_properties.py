"""Property-based tests (hypothesis): the config loader on arbitrary input, the speedup and interval maths on
arbitrary curves."""

import math

import numpy as np
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loopmdm_core.config import RunConfig, apply_overrides, flatten, load_run_config
from loopmdm_core.errors import ConfigError
from orchestrator import isoflops as iso

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8))
KEYS = sorted(flatten(RunConfig()))  # every real dotted key, plus junk ones below
keys = st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=12).filter(lambda k: "=" not in k))


@SETTINGS
@given(st.dictionaries(keys, st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=6))
def test_config_loader_accepts_or_names_the_problem(overrides):
    """Any mapping of dotted keys to values: a valid RunConfig, or a ConfigError whose every line names a
    dotted path; never another exception."""
    nested: dict = {}
    try:
        for key, value in overrides.items():
            nested = apply_overrides(nested, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    except ConfigError:
        return
    try:
        cfg = load_run_config(nested)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and ":" in p for p in e.problems)
        return
    assert load_run_config(cfg.to_dict()) == cfg  # what loads, round-trips


@SETTINGS
@given(n_layers=st.integers(1, 8), data=st.data())
def test_valid_model_configs_round_trip_through_overrides(n_layers, data):
    start = data.draw(st.integers(0, n_layers - 1))
    end = data.draw(st.integers(start + 1, n_layers))
    n = data.draw(st.integers(1, 6))
    cfg = load_run_config({"model": {"n_layers": n_layers, "loop_start": start, "loop_end": end, "n_loops": n}})
    again = load_run_config(apply_overrides({}, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                                                 for k, v in flatten(cfg).items()]))
    assert again == cfg


positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(shift=st.floats(0.1, 10.0), scale=st.floats(1e-3, 1e3), alpha=st.floats(0.05, 1.0), points=st.integers(3, 30))
def test_speedup_recovers_a_known_flops_shift(shift, scale, alpha, points):
    """A variant whose curve is the baseline's with FLOPs multiplied by `shift` has speedup `shift` when it gets
    to the target inside its range; the answer does not change when all FLOPs are rescaled."""
    flops = np.geomspace(1e10, 1e12, points)
    base = iso.curve(flops, 50 * flops ** -alpha)
    variant = iso.curve(flops, 50 * (flops * shift) ** -alpha)
    s = iso.speedup(base, variant)
    if shift <= 1:
        assert not s.reached or s.value <= 1 + 1e-9
    elif not s.lower_bound:
        assert s.reached and math.isclose(s.value, shift, rel_tol=1e-6)
    rescaled = iso.speedup(iso.curve(flops * scale, base.loss), iso.curve(flops * scale, variant.loss))
    assert rescaled.reached == s.reached
    if s.reached:
        assert math.isclose(rescaled.value, s.value, rel_tol=1e-6)


@SETTINGS
@given(st.lists(st.tuples(positive, positive), min_size=1, max_size=20),
       st.lists(st.tuples(positive, positive), min_size=1, max_size=20))
def test_speedup_is_defined_for_any_curves(a, b):
    """Noisy, non-monotone, any-length curves: a speedup is a positive number or 'not reached', and a curve
    compared with itself reaches its own final loss at its own final FLOPs (speedup 1) at most."""
    base, variant = iso.curve(*zip(*a)), iso.curve(*zip(*b))
    s = iso.speedup(base, variant)
    assert s.value is None or (s.value > 0 and math.isfinite(s.value))
    own = iso.speedup(base, base)
    assert own.reached and own.value >= 1 - 1e-9


@SETTINGS
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=12))
def test_bootstrap_interval_brackets_the_mean(values):
    i = iso.bootstrap(values)
    assert i.low <= i.mean + 1e-9 * max(1, abs(i.mean)) and i.mean <= i.high + 1e-9 * max(1, abs(i.mean))
    assert min(values) - 1e-9 <= i.low and i.high <= max(values) + 1e-9


@SETTINGS
@given(total=st.integers(1, 10_000), data=st.data())
def test_wilson_interval_is_a_probability_interval_around_the_rate(total, data):
    correct = data.draw(st.integers(0, total))
    i = iso.wilson(correct, total)
    assert 0 <= i.low <= i.mean <= i.high <= 1 and i.mean == correct / total


@SETTINGS
@given(st.lists(st.tuples(positive, st.floats(0, 1)), min_size=1, max_size=8), positive, st.floats(0, 1))
def test_compute_saved_is_below_one_and_none_only_when_unmatched(fixed, flops, accuracy):
    saved = iso.compute_saved(fixed, flops, accuracy)
    matched = [f for f, a in fixed if a >= accuracy]
    assert (saved is None) == (not matched)
    if saved is not None:
        assert saved < 1 and math.isclose(saved, 1 - flops / min(matched))


reached_or_not = st.one_of(st.none(), st.floats(1e-3, 1e3, allow_nan=False))


@SETTINGS
@given(st.lists(reached_or_not, min_size=1, max_size=12))
def test_censored_median_never_averages_only_the_reached(values):
    """The median ranks not-reached seeds lowest: it is not reached exactly when the middle of the ranking is,
    it equals the plain median when all reached, and its interval brackets it (not reached = lowest)."""
    m = iso.censored_median(values, n_resamples=500)
    keys = sorted(-math.inf if v is None else v for v in values)
    middle = keys[(len(keys) - 1) // 2], keys[len(keys) // 2]
    assert (m.median is None) == (-math.inf in middle)
    if m.median is not None:
        assert math.isclose(m.median, sum(middle) / 2)
    assert m.reached == sum(v is not None for v in values) and m.seeds == len(values)
    if len(values) > 1:
        assert ranks_below(m.low, m.median) and ranks_below(m.median, m.high)


def ranks_below(a, b) -> bool:
    """a <= b where None (not reached) ranks below every number, up to rounding."""
    return a is None or (b is not None and a <= b + 1e-9 * max(1.0, abs(b)))


@SETTINGS
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40))
def test_t_interval_is_symmetric_and_wider_than_the_normal_one(values):
    i = iso.t_interval(values)
    assert math.isclose(i.mean - i.low, i.high - i.mean, rel_tol=1e-9, abs_tol=1e-9)
    normal = 1.96 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    assert i.high - i.mean >= normal - 1e-9


@SETTINGS
@given(st.lists(st.tuples(positive, st.floats(0, 1)), min_size=1, max_size=20), st.floats(0, 1))
@example(points=[(44.0, 0.0), (45.0, 1.0)], target=1.1754943508222875e-38)  # exp(log(44)) rounded below 44
def test_accuracy_reach_is_on_the_curve_and_never_extrapolated(points, target):
    c = iso.accuracy_curve(*zip(*points))
    reach = iso.flops_to_reach_accuracy(c, target)
    best = iso.running_max(c).accuracy
    assert (reach.flops is None) == (best[-1] < target)
    if reach.flops is not None:
        assert c.flops[0] <= reach.flops <= c.flops[-1]  # exactly: between the two points it interpolates
        assert reach.at_first_point == (best[0] >= target)

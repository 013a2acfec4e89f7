"""The speedup math on synthetic curves with known answers."""

import math

import numpy as np
import pytest

from orchestrator import isoflops as iso

C = np.logspace(10, 13, 16)


def power(flops, E=0.0, A=50.0, alpha=0.3):
    return E + A * np.asarray(flops) ** -alpha


def test_curve_shifted_by_3x_in_flops_gives_3x():
    baseline = iso.curve(C, power(C))
    variant = iso.curve(C, power(C * 3))  # reaches every loss with 3x fewer FLOPs
    s = iso.speedup(baseline, variant)
    assert s.reached and not s.lower_bound
    assert s.value == pytest.approx(3.0, rel=1e-9)  # a pure power law is a line in log-log: exact
    assert iso.speedup(variant, baseline).value is None  # the slower curve never reaches the faster one's end


def test_shift_with_irreducible_loss_is_close_to_the_shift():
    baseline = iso.curve(C, power(C, E=1.5))
    variant = iso.curve(C, power(C * 2.5, E=1.5))
    assert iso.speedup(baseline, variant).value == pytest.approx(2.5, rel=0.01)


def test_noise_is_made_monotone_first():
    rng = np.random.default_rng(0)
    noisy = power(C * 3) * (1 + 0.01 * rng.standard_normal(len(C)))
    e = iso.envelope(iso.curve(C, noisy))
    assert (np.diff(e.loss) <= 0).all()
    s = iso.speedup(iso.curve(C, power(C)), iso.curve(C, noisy))
    assert 2.7 < s.value < 3.3


def test_never_reached_is_not_extrapolated():
    baseline = iso.curve(C, power(C))
    worse = iso.curve(C, power(C) * 1.2)
    s = iso.speedup(baseline, worse)
    assert s.value is None and not s.reached
    assert s.target == pytest.approx(power(C[-1]))
    assert iso.loss_gap(baseline, worse) == pytest.approx(0.2 * power(C[-1]))


def test_target_beaten_at_first_point_is_a_flagged_bound():
    baseline = iso.curve(C, power(C))
    much_better = iso.curve(C, power(C) * 0.1)
    s = iso.speedup(baseline, much_better)
    assert s.lower_bound and s.value == pytest.approx(C[-1] / C[0])


def test_interpolation_is_log_log():
    c = iso.curve([1e10, 1e12], [4.0, 1.0])
    assert iso.flops_to_reach(c, 2.0).flops == pytest.approx(1e11)  # log-linear halfway
    assert iso.loss_at(c, 1e11) == pytest.approx(2.0)
    assert iso.loss_at(c, 1e13) is None and iso.loss_at(c, 1e9) is None


def test_curve_cleaning():
    c = iso.curve([3e10, 1e10, 2e10, 2e10, float("nan")], [1.0, 3.0, 2.5, 2.0, 1.0])
    assert list(c.flops) == [1e10, 2e10, 3e10] and list(c.loss) == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError):
        iso.curve([], [])


def test_bootstrap_interval():
    one = iso.bootstrap([2.0])
    assert (one.mean, one.low, one.high, one.n) == (2.0, 2.0, 2.0, 1) and "1 seed" in one.fmt()
    many = iso.bootstrap([2.0, 2.2, 1.8, 2.1, 1.9])
    assert many.mean == pytest.approx(2.0) and many.low < many.mean < many.high
    assert many.high - many.low < 0.4
    assert iso.bootstrap([2.0, 2.0, 2.0]).low == 2.0


def test_power_law_fit_recovers_parameters_and_predicts():
    law = iso.fit_power_law(iso.curve(C, power(C, E=1.2, A=40, alpha=0.25)))
    assert law.E == pytest.approx(1.2, abs=0.02) and law.alpha == pytest.approx(0.25, rel=0.05)
    base = iso.PowerLaw(1.0, 50.0, 0.3)
    shifted = iso.PowerLaw(1.0, 50.0 * 2 ** -0.3, 0.3)  # the same law with 2x fewer FLOPs
    assert iso.predicted_speedup(base, shifted, 1e15) == pytest.approx(2.0)
    assert iso.predicted_speedup(base, iso.PowerLaw(3.0, 50.0, 0.3), 1e15) is None
    assert iso.fit_power_law(iso.curve(C[:2], power(C[:2]))) is None
    # 3 budgets, even with several seeds each, fit 3 parameters exactly: no trend to extrapolate
    three = np.repeat(C[[0, 7, 15]], 2)
    assert iso.fit_power_law(iso.curve(three, power(three) * np.tile([1.0, 1.01], 3))) is None
    assert iso.fit_power_law(iso.curve(C[[0, 5, 10, 15]], power(C[[0, 5, 10, 15]]))) is not None


def test_iso_curve_from_budget_finals():
    c = iso.iso_curve([(2e12, 3.0), (1e12, 3.5), (4e12, 2.8)])
    assert list(c.flops) == [1e12, 2e12, 4e12] and math.isclose(c.final_loss, 2.8)


def test_wilson_interval_matches_known_values():
    # Reference values: Wilson (1927) score interval, z = 1.96 (as given by statsmodels' proportion_confint).
    i = iso.wilson(5, 10)
    assert (i.mean, round(i.low, 4), round(i.high, 4)) == (0.5, 0.2366, 0.7634)
    i = iso.wilson(0, 20)
    assert i.low == 0.0 and round(i.high, 4) == 0.1611
    assert iso.wilson(20, 20).high == 1.0 and round(iso.wilson(20, 20).low, 4) == 0.8389


def test_compute_saved_against_the_cheapest_fixed_count_as_accurate():
    fixed = [(1.0, 0.2), (2.0, 0.4), (3.0, 0.5)]
    assert iso.compute_saved(fixed, 1.5, 0.4) == pytest.approx(0.25)
    assert iso.compute_saved(fixed, 1.5, 0.3) == pytest.approx(0.25)  # fixed:2 is the cheapest at >= 0.3
    assert iso.compute_saved(fixed, 4.0, 0.45) == pytest.approx(-1 / 3)  # costs more than fixed:3
    assert iso.compute_saved(fixed, 1.0, 0.6) is None  # more accurate than any fixed count


def test_reach_between_losses_one_ulp_apart():
    """Found by hypothesis: two losses whose logs round to the same float must not divide by zero."""
    c = iso.curve([1.0, 2.0], [0.0010000000000000002, 0.001])
    assert iso.flops_to_reach(c, 0.001).flops == 2.0
    assert iso.speedup(c, c).value == 1.0

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


def test_loss_gap_at_the_end_of_one_budget():
    """Two runs of one budget end up to a step apart: 0.5% short is still the same budget's end, 5% is not."""
    baseline = iso.curve(C, power(C))
    short = iso.curve(C * 0.995, power(C) * 1.1)
    assert iso.loss_gap(baseline, short) == pytest.approx(0.1 * power(C[-1]))
    assert iso.loss_gap(baseline, iso.curve(C * 0.95, power(C))) is None


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


def test_fit_gate_passes_a_pure_power_law_and_names_each_failure():
    fit = iso.checked_fit(iso.curve(C, power(C, E=1.2, A=40, alpha=0.25)), "clean")
    assert fit.problem == "" and fit.r2 == pytest.approx(1.0, abs=1e-3)  # E on a grid: not exactly 1
    step = iso.curve(C, np.r_[[5.0] * 8, [4.0] * 8])  # a drop in one jump: no power law describes it
    fit = iso.checked_fit(step, "step")
    assert fit.r2 < iso.MIN_FIT_R2 and fit.problem == f"fit R^2 {fit.r2:.2f} < 0.95 for step"
    assert iso.checked_fit(iso.curve(C[:3], power(C[:3])), "short").problem == "fit has 3 distinct points < 4 for short"
    assert iso.checked_fit(iso.curve(C, 1 + C / C[-1]), "rising").problem == "no decaying power law fits rising"
    assert iso.checked_fit(iso.curve(C, 50 * C ** -3.0), "steep").problem == "fitted alpha 3 outside [0.01, 2.0] for steep"
    # a law whose floor E is at or above the smallest loss the curve already reached (the fitter never gives one)
    flops = np.logspace(0, 3, 16)
    c = iso.curve(flops, 1.0 + 100 / flops)  # 101 down to 1.1: a wide range, so R^2 stays high
    assert iso.fit_problem(c, iso.PowerLaw(1.1, 100.0, 1.0), "floor") == \
        "fitted E 1.1 not below the smallest observed loss 1.1 for floor"


def test_extrapolation_reported_with_its_seed_interval():
    """Three seeds of a loop curve shifted 2x, 3x and 4x against identical baselines: every resample's mean curve
    is again a pure power law, so each resample predicts exactly its mean shift; the interval's ends are the
    resamples of one seed only (2x and 4x), each drawn with chance 1/27 > 2.5%."""
    base = [iso.curve(C, power(C)) for _ in range(3)]
    loop = [iso.curve(C, power(C * s)) for s in (2.0, 3.0, 4.0)]
    base_fit, fit, (at10, at100) = iso.extrapolate(base, loop, ("base", "loop"), C[-1])
    assert base_fit.problem == fit.problem == "" and at10.status == at100.status == "reported"
    mean_shift = ((2 ** -0.3 + 3 ** -0.3 + 4 ** -0.3) / 3) ** (-1 / 0.3)
    assert at10.speedup == pytest.approx(mean_shift, rel=1e-3) and at100.speedup == pytest.approx(mean_shift, rel=1e-3)
    assert at10.low == pytest.approx(2.0, rel=1e-3) and at10.high == pytest.approx(4.0, rel=1e-3)
    assert at10.fmt() == f"{mean_shift:.2f}x [2.00, 4.00]"


def test_extrapolation_withheld_with_its_reason():
    base = [iso.curve(C, power(C)) for _ in range(2)]
    one = iso.extrapolate(base[:1], [iso.curve(C, power(C * 2))], ("base", "loop"), C[-1])[2]
    assert [e.fmt() for e in one] == ["withheld: 1 seed, no interval"] * 2
    assert all(e.status == "withheld" and e.speedup is None and e.low is None for e in one)
    # seeds 1x and 20x: the interval [1, 20] spans more than 10x: no single number
    wide = iso.extrapolate(base, [iso.curve(C, power(C)), iso.curve(C, power(C * 20))], ("base", "loop"), C[-1])[2]
    assert wide[0].withheld == "interval [1.00, 20.00] spans more than 10x" and wide[0].speedup is None
    step = [iso.curve(C, np.r_[[5.0] * 8, [4.0] * 8])] * 2
    bad = iso.extrapolate(step, base, ("same_size(4L)", "loop"), C[-1])
    assert bad[2][0].withheld.startswith("fit R^2 0.75 < 0.95 for same_size(4L)")


def test_power_law_fit_equals_the_per_grid_point_least_squares():
    """The vectorised fit picks the same E as a line fit (np.polyfit) at each grid value of E."""
    rng = np.random.default_rng(1)
    for _ in range(5):
        c = iso.curve(C, power(C, E=1.0) * (1 + 0.01 * rng.standard_normal(len(C))))
        best = None
        for E in np.linspace(0, c.loss.min() * (1 - 1e-6), 400):
            slope, intercept = np.polyfit(np.log(c.flops), np.log(c.loss - E), 1)
            sse = ((np.log(E + np.exp(intercept + slope * np.log(c.flops))) - np.log(c.loss)) ** 2).sum()
            if slope < 0 and (best is None or sse < best[0]):
                best = (sse, E, -slope)
        law = iso.fit_power_law(c)
        assert law.E == pytest.approx(best[1]) and law.alpha == pytest.approx(best[2], rel=1e-6)


def test_accuracy_curve_flops_to_reach():
    """Hand-made: accuracy 0.1, 0.3, 0.2 at 1e10, 1e11, 1e12. The running maximum is 0.1, 0.3, 0.3; FLOPs are
    read linearly in log C against accuracy."""
    c = iso.accuracy_curve([1e10, 1e11, 1e12], [0.1, 0.3, 0.2])
    assert list(iso.running_max(c).accuracy) == [0.1, 0.3, 0.3]
    assert iso.flops_to_reach_accuracy(c, 0.2).flops == pytest.approx(10 ** 10.5)
    assert iso.flops_to_reach_accuracy(c, 0.25).flops == pytest.approx(10 ** 10.75)
    assert iso.flops_to_reach_accuracy(c, 0.3).flops == pytest.approx(1e11)
    assert iso.flops_to_reach_accuracy(c, 0.35).flops is None  # never: not extrapolated
    first = iso.flops_to_reach_accuracy(c, 0.05)
    assert first.flops == 1e10 and first.at_first_point
    assert list(iso.accuracy_curve([1.0, 2.0], [0.0, 0.5]).accuracy) == [0.0, 0.5]  # 0 is a real accuracy


def test_accuracy_speedup_targets_the_baselines_best():
    base = iso.accuracy_curve([1e10, 1e11, 1e12], [0.1, 0.2, 0.4])
    loop = iso.accuracy_curve([1e10, 1e11, 1e12], [0.2, 0.4, 0.5])
    s = iso.accuracy_speedup(base, loop)
    assert s.value == pytest.approx(10.0) and s.target == 0.4 and not s.lower_bound
    dipped = iso.accuracy_curve([1e10, 1e11, 1e12], [0.1, 0.5, 0.4])  # running max: the target is 0.5, not 0.4
    assert iso.accuracy_speedup(dipped, loop).value == pytest.approx(1.0)
    assert not iso.accuracy_speedup(loop, base).reached
    assert iso.mean_accuracy_curve([(1e10, 0.2), (1e10, 0.4), (1e11, 0.5)]).accuracy.tolist() == pytest.approx([0.3, 0.5])

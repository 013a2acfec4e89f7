"""Statistics over seeds against hand-computed answers: censored medians and their bootstrap, Student t
intervals, verdicts, Newcombe's difference of two proportions."""

import math

import pytest

from orchestrator import isoflops as iso

NR = None  # a seed that never reached the target


def test_t_quantile_matches_the_tables():
    # Student t, two-sided 95% (t_0.975), from any statistics table
    assert iso.t_quantile(1) == 12.706 and iso.t_quantile(2) == 4.303 and iso.t_quantile(4) == 2.776
    assert iso.t_quantile(10) == 2.228 and iso.t_quantile(30) == 2.042
    assert iso.t_quantile(35) == 2.042  # between rows: the smaller df's (larger) quantile, never a narrower interval
    assert iso.t_quantile(120) == 1.980 and iso.t_quantile(1000) == 1.96
    with pytest.raises(ValueError):
        iso.t_quantile(0)


def test_t_interval_by_hand():
    # [1, 2, 3]: mean 2, sample std 1, half width 4.303 / sqrt(3) = 2.48434
    i = iso.t_interval([1.0, 2.0, 3.0])
    assert i.mean == 2.0 and i.n == 3
    assert i.low == pytest.approx(2 - 2.48434, abs=1e-5) and i.high == pytest.approx(2 + 2.48434, abs=1e-5)
    # [0.5, 1.5]: std 0.70711, df 1: 12.706 * 0.70711 / sqrt(2) = 6.353
    assert iso.t_interval([0.5, 1.5]).high == pytest.approx(1 + 6.353, abs=1e-3)
    one = iso.t_interval([4.2])
    assert (one.mean, one.low, one.high, one.n) == (4.2, 4.2, 4.2, 1)
    assert iso.spread([1.0, 2.0, 3.0]) == 1.0 and iso.spread([5.0]) is None


def test_censored_median_ranks_not_reached_lowest():
    m = iso.censored_median([NR, 2.0, 3.0])
    assert (m.median, m.reached, m.seeds, m.lower_bound) == (2.0, 2, 3, False)
    m = iso.censored_median([NR, NR, 3.0])
    assert m.median is None and m.reached == 1
    assert m.fmt() == "not reached (median); reached 1/3 seeds"
    # two seeds, one not reached: the median averages a not-reached value, so it is not reached (never "4.01x")
    m = iso.censored_median([NR, 4.01])
    assert m.median is None and m.fmt() == "not reached (median); reached 1/2 seeds"
    assert iso.censored_median([2.0, 3.0]).median == 2.5
    # three of five not reached: the reached 4.0s are not what the median says
    assert iso.censored_median([NR, 4.0, 4.0, NR, NR]).median is None


def test_bootstrap_interval_of_a_censored_median():
    """Resampling 3 seeds [not reached, 2, 3] with replacement: the resample median is not reached when >= 2 of
    the 3 draws are, P = 3 (1/3)^2 (2/3) + (1/3)^3 = 7/27, and 3.0 with the same chance 7/27; both are far
    above 2.5%, so the 95% interval runs from 'not reached' to 3.0."""
    m = iso.censored_median([NR, 2.0, 3.0])
    assert (m.low, m.high) == (None, 3.0)
    assert m.fmt() == "2.00x [not reached, 3.00]; reached 2/3 seeds"
    assert m.verdict() == "no detectable difference"
    # [not reached, 4.01]: resample medians are not reached (3/4 of draws) or 4.01 (1/4)
    assert iso.censored_median([NR, 4.01]).high == 4.01
    # [2, 3]: resample medians 2 (1/4), 2.5 (1/2), 3 (1/4)
    m = iso.censored_median([2.0, 3.0])
    assert (m.low, m.high) == (2.0, 3.0) and m.fmt() == "2.50x [2.00, 3.00]; reached 2/2 seeds"
    m = iso.censored_median([NR, NR])
    assert (m.median, m.low, m.high) == (None, None, None) and m.verdict() == "slower"


def test_lower_bound_marker_follows_the_median():
    assert iso.censored_median([2.0, 1.0, 5.0], [True, False, False]).fmt().startswith("≥ 2.00x")
    assert not iso.censored_median([5.0, 1.0, 2.0], [True, False, False]).lower_bound  # the bound is not the median
    assert iso.censored_median([3.0, 3.0], [True, True]).as_dict() == {
        "median": 3.0, "low": 3.0, "high": 3.0, "reached": 2, "seeds": 2, "lower_bound": True, "verdict": "faster"}


def test_speedup_verdicts():
    assert iso.censored_median([3.0, 3.1, 2.9]).verdict() == "faster"
    assert iso.censored_median([0.5, 0.6]).verdict() == "slower"
    assert iso.censored_median([0.9, 1.1]).verdict() == "no detectable difference"  # the interval holds 1.0x
    assert iso.censored_median([1.0, 1.0]).verdict() == "no detectable difference"
    one = iso.censored_median([2.0])
    assert one.verdict() == "1 seed: no interval" and (one.low, one.high) == (None, None)
    assert one.fmt() == "2.00x (1 seed: no interval); reached 1/1 seeds"
    none = iso.censored_median([])
    assert none.fmt() == "n/a (no baseline)" and none.verdict() == "n/a"


def test_difference_verdict():
    assert iso.verdict(-0.3, -0.1, 0.0, "higher loss", "lower loss") == "lower loss"
    assert iso.verdict(0.1, 0.3, 0.0, "higher loss", "lower loss") == "higher loss"
    assert iso.verdict(-0.1, 0.3, 0.0, "higher loss", "lower loss") == "no detectable difference"


def test_newcombe_matches_the_paper():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10 (hybrid score)
    i = iso.newcombe(56, 70, 48, 80)
    assert i.mean == pytest.approx(0.2) and (round(i.low, 4), round(i.high, 4)) == (0.0524, 0.3339)
    i = iso.newcombe(9, 10, 3, 10)
    assert i.mean == pytest.approx(0.6) and (round(i.low, 4), round(i.high, 4)) == (0.1705, 0.8090)
    assert math.isclose(iso.newcombe(5, 10, 5, 10).mean, 0.0, abs_tol=1e-12)

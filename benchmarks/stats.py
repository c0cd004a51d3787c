"""Summary statistics of the benchmarks' latency samples (shared by the scripts here).

Percentiles are ``statistics.quantiles(data, n=100, method="inclusive")``: linear
interpolation between the closest ranks of the sorted sample, so p50 of the cut points
is the ordinary median. The scripts import this module as plain ``stats`` (see
``serving``).
"""

from __future__ import annotations

import statistics

PERCENTILE_METHOD = 'statistics.quantiles(data, n=100, method="inclusive")'


def summarize(values: list[float]) -> dict[str, float] | None:
    """min/median/p90/p99/max/mean; percentiles per PERCENTILE_METHOD. None: no values."""
    if not values:
        return None
    cuts = (
        statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    )
    return {
        "min": min(values),
        "median": cuts[49],
        "p90": cuts[89],
        "p99": cuts[98],
        "max": max(values),
        "mean": statistics.fmean(values),
    }

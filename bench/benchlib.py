"""Shared helpers of the benchmarks: engine import path, timing statistics."""
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)  # tests/conftest.py makes ansible_collections.cnm.core importable


def ms(seconds):
    """Seconds as milliseconds, rounded for printing."""
    return round(seconds * 1000, 2)


def stats(samples):
    """Median, p90 and count of a list of durations in seconds (as milliseconds)."""
    ordered = sorted(samples)
    return {"median_ms": ms(statistics.median(ordered)),
            "p90_ms": ms(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]),
            "n": len(ordered)}


def growth(series):
    """Attach #1-10 against #91-100 over several runs of 100 serial attaches.

    ``series``: lists of 100 durations (seconds), each run started from an empty
    network. Positions 1-10 and 91-100 are pooled over the runs before taking medians,
    so one burst of noise on this shared machine does not decide the ratio. Returns the
    total of the slowest run, both medians (ms), the ratio and the per-run ratios.
    """
    first = [t for s in series for t in s[:10]]
    last = [t for s in series for t in s[90:100]]
    a, b = statistics.median(first), statistics.median(last)
    return {"runs": len(series), "total_s_max": round(max(sum(s) for s in series), 3),
            "median_1_10_ms": ms(a), "median_91_100_ms": ms(b),
            "growth_ratio": round(b / a, 2) if a else None,
            "per_run_ratios": [round(statistics.median(s[90:100]) / statistics.median(s[:10]), 2)
                               for s in series]}

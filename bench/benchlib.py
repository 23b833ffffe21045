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

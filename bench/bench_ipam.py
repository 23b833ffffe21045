#!/usr/bin/env python
"""Benchmark the IPAM allocator: fill a /16 with allocate() (target: <= 1 s).

Run from the collection root: ``.venv/bin/python bench/bench_ipam.py``. Prints one JSON
object, then a one-line table. The engine is imported as Ansible imports it, through
``build/collections/ansible_collections/cnm/core`` (same symlink as tests/conftest.py).
"""
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_engine():
    """Make ``ansible_collections.cnm.core`` importable (tests/conftest.py does it)."""
    tests = os.path.join(REPO, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import conftest  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel


def main():
    _import_engine()
    from ansible_collections.cnm.core.plugins.module_utils.errors import PoolExhaustedError
    from ansible_collections.cnm.core.plugins.module_utils.ipam.allocator import (
        AddressAllocator,
    )
    from ansible_collections.cnm.core.plugins.module_utils.ipam.config import parse_ipam_config

    pool = parse_ipam_config([{"subnet": "10.7.0.0/16"}], enable_ipv6=False)[0]
    allocator = AddressAllocator(pool)
    start = time.perf_counter()
    count = 0
    while True:
        try:
            allocator.allocate()
        except PoolExhaustedError:
            break
        count += 1
    seconds = time.perf_counter() - start
    assert count == 65533, count  # 65536 - network - broadcast - gateway
    print(json.dumps({"ipam_fill_16_seconds": round(seconds, 4)}))
    print("%-28s %10s %12s %8s" % ("benchmark", "addresses", "seconds", "target"))
    print("%-28s %10d %12.4f %8s" % ("ipam fill /16 (allocate)", count, seconds, "<= 1 s"))
    return 0 if seconds <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())

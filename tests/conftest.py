"""Make the checkout importable as ``ansible_collections.cnm.core`` (no install needed).

The engine is imported exactly as Ansible imports it, through a symlink
``build/collections/ansible_collections/cnm/core -> <repo root>``.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, "build", "collections")


def _ensure_collection_link():
    parent = os.path.join(COLLECTIONS, "ansible_collections", "cnm")
    link = os.path.join(parent, "core")
    os.makedirs(parent, exist_ok=True)
    if not os.path.islink(link):
        try:
            os.symlink(os.path.relpath(REPO, parent), link)
        except FileExistsError:
            pass


_ensure_collection_link()
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SimHost  # noqa: E402


@pytest.fixture
def host():
    """A throwaway simulated host (network namespace + private engine dirs)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    h = SimHost("h")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def make_host():
    """Factory for several simulated hosts; all are removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = []

    def factory(label="h"):
        h = SimHost(label)
        made.append(h)
        return h

    try:
        yield factory
    finally:
        for h in reversed(made):
            h.close()

"""Module tests: real ansible-playbook runs against simulated hosts.

Fixtures ``host``/``make_host`` come from tests/conftest.py; ``ansible_runner.py`` beside
this file runs the playbooks.
"""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
    """Every test in this directory is a module test (marker ``modules``)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here + os.sep):
            item.add_marker(pytest.mark.modules)


@pytest.fixture(scope="session", autouse=True)
def _ansible_playbook_available():
    if not os.path.exists(os.path.join(REPO, ".venv", "bin", "ansible-playbook")):
        pytest.skip("no .venv/bin/ansible-playbook: run `make deps`")

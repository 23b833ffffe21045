"""Fixtures shared by the firewall integration tests."""
import os

import pytest

from test_firewall_traffic import BACKENDS, Lab


@pytest.fixture(params=BACKENDS)
def lab(request, make_host):
    """Two simulated hosts on a LAN with one firewall backend (each test runs on both)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made = Lab(make_host, request.param)
    try:
        yield made
    finally:
        made.close()

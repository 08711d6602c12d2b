"""Shared tiny configuration of the ADP-C tests."""

import pytest

TINY = dict(stem=16, layer1=(1, 8), stages=((1, (1, 1), (8, 16)), (1, (1, 1, 1), (8, 16, 32)),
                                          (1, (1, 1, 1, 1), (8, 16, 32, 64))))


@pytest.fixture(scope="session")
def tiny_config():
    return TINY

"""Shared pytest configuration: the `slow` marker and quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--run_slow", action="store_true", default=False,
        help="also run tests marked slow (each longer than a minute)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run_slow") or os.environ.get("BNCR_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: pass --run_slow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

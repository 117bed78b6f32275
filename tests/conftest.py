"""Shared pytest configuration: the `slow` marker and quiet TensorFlow;
`load_tool`, the one loader of tools/*.py scripts for tests
(`from conftest import load_tool`)."""

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

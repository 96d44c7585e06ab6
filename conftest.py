"""pytest's root: the shared fixtures (tests/fixtures.py) and the benchmark options, for tests/ and bench/ alike."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("signkit", "signkit benchmarks and parity")
    group.addoption("--run", default=None, help="a training run folder with its builds ($SIGNKIT_BENCH_RUN)")
    group.addoption("--data", default=None, help="the run's dataset, for accuracy parity on real data (default: its own)")
    group.addoption("--split", default="val", choices=("val", "test"), help="evaluation split for parity")

"""Every command's --help: examples kept line by line, no meaningless "(default: None)"."""

from __future__ import annotations

import importlib

import pytest

COMMANDS = ("train.__main__", "train.evaluate", "train.download", "train.negatives", "train.proposals", "train.sign_map", "export.tflite",
            "export.onnx", "export.all", "export.threshold", "export.debug", "bench.gtsdb", "bench.misses", "bench.drive", "bench.report",
            "camera_demo.__main__", "train.inspect", "train.explain", "train.sweep", "train.data.to_folders")


@pytest.mark.parametrize("module", COMMANDS)
def test_help_keeps_examples_and_shows_only_meaningful_defaults(module):
    text = importlib.import_module(module).build_parser().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    examples = text.split("example")[-1].splitlines()[1:]
    assert examples and all(line.startswith("  python -m ") for line in examples if line.strip()), text

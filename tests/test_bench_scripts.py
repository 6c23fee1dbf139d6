"""Option handling of the benchmark scripts (the runs themselves are benchmarks, not tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(SCRIPTS))


def test_bench_dcm_set_overrides_nested_entries_with_yaml_values():
    bench = _load("bench_dcm")
    cfg = {"model": {"hidden": [64]}, "train": {"steps": 10}}
    bench._set(cfg, "model.batchnorm=false")
    bench._set(cfg, "train.steps=25")
    bench._set(cfg, "train.mode=joint")
    bench._set(cfg, "train.hnodes.I.lr=1e-4")
    assert cfg["model"] == {"hidden": [64], "batchnorm": False}
    assert cfg["train"]["mode"] == "joint"
    assert cfg["train"]["steps"] == 25 and cfg["train"]["hnodes"] == {"I": {"lr": 1e-4}}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench._set(cfg, "model.batchnorm")
    with pytest.raises(SystemExit, match="not a mapping"):
        bench._set(cfg, "train.steps.x=1")

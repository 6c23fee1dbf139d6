"""Shared helpers for the benchmark scripts: the record schema and result files."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

FIELDS = ("benchmark", "method", "metric", "query", "value", "seconds", "config", "commit")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[1]).stdout.strip()
    except Exception:
        return "unknown"


def record(benchmark, method, metric, query, value, seconds, config, commit) -> dict:
    """One benchmark record with the project-wide schema."""
    return {
        "benchmark": benchmark, "method": method, "metric": metric, "query": query,
        "value": None if value is None else float(value),
        "seconds": None if seconds is None else float(seconds),
        "config": config, "commit": commit,
    }


def write_results(path, records) -> None:
    """Atomically write a JSON list of records (checked against the schema)."""
    for r in records:
        if tuple(r) != FIELDS:
            raise ValueError(f"record keys {tuple(r)} differ from {FIELDS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(records, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print(f"wrote {path} ({len(records)} records)")

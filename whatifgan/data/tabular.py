"""Datasets of observed (and intervened) variables: validation, generation from SCMs, files.

A :class:`Dataset` is one sample ``D ~ P_I(V_D)``: named columns (integer codes for categorical
variables, float arrays for continuous ones, uint8/float arrays for images), the intervention
targets ``I`` (their values are columns too, fixed or per sample) and nothing else. It is what
``hgraph.training_plan`` calls a dataset spec, plus the data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "DataError"]


class DataError(ValueError):
    """Data that does not match the graph or the variable specs."""


@dataclass
class Dataset:
    name: str
    columns: dict[str, np.ndarray]
    targets: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.columns = {k: np.asarray(v) for k, v in self.columns.items()}
        self.targets = tuple(self.targets)
        sizes = {k: len(v) for k, v in self.columns.items()}
        if not sizes:
            raise DataError(f"dataset {self.name!r} has no columns")
        if len(set(sizes.values())) != 1:
            raise DataError(f"dataset {self.name!r}: columns have different lengths {sizes}")
        missing = [t for t in self.targets if t not in self.columns]
        if missing:
            raise DataError(f"dataset {self.name!r}: intervention target(s) {missing} have no column "
                            f"(the intervened values must be recorded)")

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def variables(self) -> list[str]:
        return list(self.columns)

    def spec(self):
        """The ``hgraph.DatasetSpec`` of this dataset."""
        from hgraph import DatasetSpec

        return DatasetSpec(self.name, frozenset(self.targets), frozenset(self.columns))

    def validate(self, graph, variables) -> "Dataset":
        """Check names against the graph and values against the variable specs.

        Raises :class:`DataError` naming the dataset and variable (unknown column, value out of
        range, wrong shape, NaN).
        """
        for v in self.columns:
            if v not in graph:
                raise DataError(f"dataset {self.name!r}: column {v!r} is not a variable of the graph "
                                f"{list(graph.nodes)}")
            if v not in variables:
                raise DataError(f"dataset {self.name!r}: variable {v!r} has no spec")
            try:
                variables[v].validate(self.columns[v])
            except ValueError as e:
                raise DataError(f"dataset {self.name!r}: {e}") from None
        return self

    def subset(self, variables: Iterable[str], name: str | None = None) -> "Dataset":
        variables = list(variables)
        missing = [v for v in variables if v not in self.columns]
        if missing:
            raise DataError(f"dataset {self.name!r} has no column(s) {missing}")
        keep = list(dict.fromkeys(variables + [t for t in self.targets]))
        return Dataset(name or self.name, {v: self.columns[v] for v in keep}, self.targets, dict(self.meta))

    # -------------------------------------------------------------- generation
    @classmethod
    def from_scm(cls, scm, n: int, name: str = "obs", do: Mapping | None = None,
                 variables: Iterable[str] | None = None, seed: int = 0) -> "Dataset":
        """Sample ``n`` rows from a :class:`hgraph.DiscreteSCM` (optionally under ``do``),
        keeping ``variables`` (all observed by default; targets are always kept)."""
        do = dict(do or {})
        cols = scm.sample(n, do=do or None, seed=seed)
        keep = list(variables) if variables is not None else list(scm.nodes)
        for t in do:
            if t not in keep:
                keep.append(t)
        return cls(name, {v: cols[v] for v in keep}, tuple(do), {"seed": seed, "do": {k: _jsonable(v) for k, v in do.items()}})

    # -------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "targets": list(self.targets), "meta": self.meta}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, __meta__=np.array(json.dumps(meta)), **self.columns)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"])) if "__meta__" in z else {}
                cols = {k: z[k] for k in z.files if k != "__meta__"}
        except Exception as e:  # corrupt or foreign file
            raise DataError(f"cannot read dataset {path}: {e}") from None
        return cls(meta.get("name", path.stem), cols, tuple(meta.get("targets", ())), meta.get("meta", {}))

    @classmethod
    def from_csv(cls, path: str | Path, name: str | None = None, targets: Iterable[str] = ()) -> "Dataset":
        """Read integer/float columns from a CSV with a header row."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset file not found: {path}")
        arr = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
        cols = {k: np.asarray(arr[k]) for k in arr.dtype.names}
        return cls(name or path.stem, cols, tuple(targets))


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return "per-sample"
    return v.item() if hasattr(v, "item") else v

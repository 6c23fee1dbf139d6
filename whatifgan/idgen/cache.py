"""Cache of trained conditional models, keyed by (variable, conditioning set, data fingerprint).

ID-GEN trains the same conditional model many times over: the Update steps of different c-factors
(and of different queries on the same data) share factors such as ``P(x | w1, w2)`` in the
paper's Figure 3, and two queries on one dataset share every base-case model they have in common.
A model is fully determined by its variable, its inputs, the rows it is trained on, the back end's
settings and the seed, so :class:`ModelCache` keys it by

    (variable, inputs, fingerprint of the training columns, back-end fingerprint, seed)

where the data fingerprint hashes the bytes of exactly the columns the model reads
(:func:`fingerprint`).  Generated datasets ``D'`` are deterministic given their seed, so their
fingerprints repeat across queries too.  The cache lives in memory and optionally in a directory
(``torch.save`` of the whole model; only load caches you wrote yourself: unpickling runs code).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["DataTable", "ModelCache", "column_hash", "fingerprint"]


def column_hash(t: Tensor) -> str:
    """SHA-1 of a column's dtype, shape and bytes."""
    h = hashlib.sha1()
    c = t.detach().contiguous().cpu()
    h.update(f"{c.dtype}|{tuple(c.shape)}|".encode())
    h.update(c.numpy().tobytes() if c.dtype != torch.bfloat16 else c.float().numpy().tobytes())
    return h.hexdigest()


def fingerprint(columns: Mapping[str, Tensor], names: Sequence[str] | None = None) -> str:
    """Fingerprint of the named columns (all by default), independent of their order."""
    names = sorted(columns) if names is None else sorted(names)
    h = hashlib.sha1()
    for k in names:
        h.update(f"{k}={column_hash(columns[k])};".encode())
    return h.hexdigest()[:20]


class DataTable:
    """Named columns of equal length (raw values: codes, floats, images) with cached column
    hashes, plus provenance (``info``: a :class:`~whatifgan.idgen.network.DataInfo`)."""

    def __init__(self, columns: Mapping[str, Tensor], info: Any = None):
        self.columns = dict(columns)
        sizes = {k: int(v.shape[0]) for k, v in self.columns.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"columns have different lengths: {sizes}")
        self.n = next(iter(sizes.values())) if sizes else 0
        self.info = info
        self._hash: dict[str, str] = {}

    def __contains__(self, k) -> bool:
        return k in self.columns

    def __getitem__(self, k) -> Tensor:
        try:
            return self.columns[k]
        except KeyError:
            raise KeyError(f"the training data {getattr(self.info, 'name', '')!r} have no column {k!r} "
                           f"(columns: {sorted(self.columns)})") from None

    def hash(self, k: str) -> str:
        if k not in self._hash:
            self._hash[k] = column_hash(self[k])
        return self._hash[k]

    def fingerprint(self, names: Sequence[str] | None = None) -> str:
        names = sorted(self.columns) if names is None else sorted(set(names))
        h = hashlib.sha1()
        for k in names:
            h.update(f"{k}={self.hash(k)};".encode())
        return h.hexdigest()[:20]


class ModelCache:
    """Trained models by key; ``stats`` counts trainings and hits.

    ``directory``: also persist models there (``<key>.pt``) and reuse them across processes.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self._mem: dict[str, Any] = {}
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.trained = 0
        self.hits = 0
        self.disk_hits = 0
        self.seconds = 0.0

    @staticmethod
    def key(variable: str, inputs: Sequence[str], data_fingerprint: str, backend: str,
            seed: int = 0) -> str:
        payload = json.dumps([variable, list(inputs), data_fingerprint, backend, int(seed)])
        return hashlib.sha1(payload.encode()).hexdigest()[:24]

    def __contains__(self, key: str) -> bool:
        return key in self._mem or (self.directory is not None and (self.directory / f"{key}.pt").exists())

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str):
        if key in self._mem:
            return self._mem[key]
        if self.directory is not None:
            p = self.directory / f"{key}.pt"
            if p.exists():
                model = torch.load(p, map_location="cpu", weights_only=False)
                self._mem[key] = model
                self.disk_hits += 1
                return model
        return None

    def put(self, key: str, model) -> None:
        self._mem[key] = model
        if self.directory is not None:
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            os.close(fd)
            torch.save(model, tmp)
            os.replace(tmp, self.directory / f"{key}.pt")

    def get_or_train(self, key: str, train: Callable[[], Any]) -> tuple[Any, bool]:
        """The cached model for ``key`` (hit) or ``train()``'s result, stored (miss)."""
        got = self.get(key)
        if got is not None:
            self.hits += 1
            return got, True
        model = train()
        self.trained += 1
        self.seconds += float(getattr(model, "info", {}).get("seconds", 0.0) or 0.0)
        self.put(key, model)
        return model, False

    @property
    def stats(self) -> dict[str, Any]:
        return {"trained": self.trained, "hits": self.hits, "disk_hits": self.disk_hits,
                "models": len(self._mem), "train_seconds": round(self.seconds, 3)}

    def clear(self) -> None:
        self._mem.clear()

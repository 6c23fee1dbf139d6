"""Graphs shipped with the toolkit (``configs/graphs/*.yaml``), addressable by name."""

from __future__ import annotations

from pathlib import Path

__all__ = ["graph_dirs", "graph_path", "list_graphs"]


def graph_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    dirs = [Path.cwd() / "configs" / "graphs", here.parent / "configs" / "graphs", here / "graphs"]
    out = []
    for d in dirs:
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def list_graphs() -> list[str]:
    names = set()
    for d in graph_dirs():
        names |= {p.stem for p in d.glob("*.yaml")}
    return sorted(names)


def graph_path(name: str) -> Path | None:
    for d in graph_dirs():
        for ext in (".yaml", ".yml", ".json"):
            p = d / f"{name}{ext}"
            if p.is_file():
                return p
    return None

"""PNG drawings of causal graphs and training plans (matplotlib, imported lazily; no graphviz)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["draw_graph", "draw_plan"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _layers(g, groups):
    """Positions: one row per longest-path level of the causal graph, groups kept together."""
    level = {}
    for v in g.topological_order():
        level[v] = 1 + max((level[p] for p in g.pa(v)), default=-1)
    return level


def _draw_edges(ax, g, pos):
    from matplotlib.patches import FancyArrowPatch

    for u, v in g.directed_edges:
        ax.add_patch(FancyArrowPatch(pos[u], pos[v], arrowstyle="-|>", mutation_scale=14, color="black",
                                     shrinkA=14, shrinkB=14, lw=1.2, zorder=2))
    for a, b in g.bidirected_edges:
        ax.add_patch(FancyArrowPatch(pos[a], pos[b], arrowstyle="<|-|>", mutation_scale=12, color="tab:red",
                                     linestyle="--", shrinkA=14, shrinkB=14, lw=1.1,
                                     connectionstyle="arc3,rad=0.35", zorder=2))


def _positions(g, order_key=None):
    level = _layers(g, None)
    rows: dict[int, list[str]] = {}
    for v in g.topological_order():
        rows.setdefault(level[v], []).append(v)
    pos = {}
    for lv, vs in rows.items():
        if order_key:
            vs = sorted(vs, key=order_key)
        n = len(vs)
        for i, v in enumerate(vs):
            pos[v] = (i - (n - 1) / 2.0, -lv)
    return pos


def _draw_nodes(ax, pos, colors=None):
    for v, (x, y) in pos.items():
        ax.scatter([x], [y], s=900, color=(colors or {}).get(v, "white"), edgecolors="black", zorder=3)
        ax.text(x, y, v, ha="center", va="center", fontsize=8, zorder=4)


def _finish(ax, fig, pos, path, title):
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _plt().close(fig)
    return str(path)


def draw_graph(g, path: str, title: str | None = None) -> str:
    """Draw an ADMG: directed edges black, confounders red dashed."""
    plt = _plt()
    pos = _positions(g)
    w = max(4.0, 1.3 * (max(abs(p[0]) for p in pos.values()) * 2 + 2)) if pos else 4.0
    fig, ax = plt.subplots(figsize=(min(w, 30), max(3.0, 1.4 * (1 - min(p[1] for p in pos.values())))))
    _draw_edges(ax, g, pos)
    _draw_nodes(ax, pos)
    return _finish(ax, fig, pos, path, title or g.to_string()[:120])


def draw_plan(plan, path: str) -> str:
    """Draw the causal graph with nodes coloured by h-node and a legend giving the H-graph."""
    plt = _plt()
    g = plan.graph
    cmap = plt.get_cmap("tab20")
    colors, owner = {}, {}
    for s in plan.steps:
        for v in s.hnode:
            colors[v] = cmap(s.index % 20)
            owner[v] = s.index
    pos = _positions(g, order_key=lambda v: owner[v])
    w = max(5.0, 1.3 * (max(abs(p[0]) for p in pos.values()) * 2 + 2))
    fig, ax = plt.subplots(figsize=(min(w, 30), max(3.5, 1.4 * (1 - min(p[1] for p in pos.values())))))
    _draw_edges(ax, g, pos)
    _draw_nodes(ax, pos, colors)
    from matplotlib.patches import Patch

    handles = [Patch(color=cmap(s.index % 20), label=f"H{s.index} (stage {s.stage}): {', '.join(s.hnode)}")
               for s in plan.steps]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False,
              title="h-nodes; H-graph: " + (", ".join(f"H{a}->H{b}" for a, b in plan.edges) or "no edges"),
              title_fontsize=7)
    return _finish(ax, fig, pos, path, "Training plan: nodes coloured by h-node")

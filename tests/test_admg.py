"""ADMG construction, validation, graph operations, d-separation and do-calculus predicates."""

import json
import subprocess
import sys

import networkx as nx
import pytest

from hgraph import ADMG, GraphError, rule1, rule2, rule3
from hgraph.generate import random_admg
from hgraph.hgraph import marginally_connected, rule2_holds

FD = "D -> I; I -> A; D <-> A"


def test_parse_edge_string_and_roundtrip():
    g = ADMG.from_string(FD)
    assert g.nodes == ("D", "I", "A")
    assert set(g.directed_edges) == {("D", "I"), ("I", "A")}
    assert g.bidirected_edges == [("D", "A")]
    assert ADMG.from_string(g.to_string()) == g
    assert ADMG.from_dict(g.to_dict()) == g


def test_chains_lists_and_latent_groups():
    g = ADMG.from_string("A, B -> C -> D; U: A, C, D; E")
    assert g.pa("C") == {"A", "B"} and g.pa("D") == {"C"}
    assert g.latent_groups["U"] == {"A", "C", "D"}
    assert ("A", "D") in g.bidirected_edges and "E" in g.nodes
    assert g.district("A") == {"A", "C", "D"}


def test_from_dict_parents_and_confounders():
    g = ADMG.from_dict({"parents": {"Y": ["X", "M"], "M": ["X"]}, "confounders": [["X", "Y"], ["X", "M", "Y"]]})
    assert g.pa("Y") == {"X", "M"}
    assert {"X", "Y"} in [set(e) for e in g.bidirected_edges]
    assert any(len(ms) == 3 for ms in g.latent_groups.values())


def test_from_networkx_with_latent_nodes():
    d = nx.DiGraph()
    d.add_edges_from([("X", "Y"), ("U", "X"), ("U", "Y")])
    d.nodes["U"]["latent"] = True
    g = ADMG.from_networkx(d)
    assert g.nodes == ("X", "Y") and g.bidirected_edges == [("X", "Y")]
    back = ADMG.from_networkx(g.to_networkx(latent=True))
    assert back == g


def test_graph_files(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("nodes: [X, M, Y]\nedges: ['X -> M', 'M -> Y', 'X <-> Y']\n")
    g = ADMG.load(str(p))
    assert g.bidirected_edges == [("X", "Y")]
    j = tmp_path / "g.json"
    j.write_text(json.dumps(g.to_dict()))
    assert ADMG.load(j) == g
    assert ADMG.load("frontdoor") == ADMG.from_string(FD)  # shipped graph by name


@pytest.mark.parametrize(
    "text, culprit",
    [
        ("A -> B; B -> C; C -> A", "directed cycle"),
        ("A -> A", "self loop A -> A"),
        ("A <-> A", "self loop A <-> A"),
        ("A -> B; A -> B", "duplicate edge A -> B"),
        ("A <-> B; B <-> A", "duplicate edge"),
        ("A -> 3B", "invalid node name"),
    ],
)
def test_bad_graphs_name_the_culprit(text, culprit):
    with pytest.raises(GraphError, match=culprit):
        ADMG.from_string(text)


def test_unknown_node_named():
    with pytest.raises(GraphError, match="unknown node 'Z'"):
        ADMG(["X", "Y"], [("X", "Z")])
    g = ADMG.from_string(FD)
    with pytest.raises(GraphError, match="unknown variable 'Q'"):
        g.ancestors("Q")
    with pytest.raises(GraphError, match="unknown key"):
        ADMG.from_dict({"nodez": ["A"]})


def test_family_and_surgery():
    g = ADMG.from_string("X -> M -> Y; X <-> Y; W -> X")
    assert g.ancestors("M") == {"M", "X", "W"}  # includes the set itself
    assert g.descendants("X") == {"X", "M", "Y"}
    assert g.parents({"M", "Y"}) == {"X"}  # parents outside the set
    assert g.children({"X"}) == {"M"}
    assert g.c_components() == [frozenset({"W"}), frozenset({"X", "Y"}), frozenset({"M"})]
    gx = g.do("X")
    assert gx.pa("X") == frozenset() and gx.bidirected_edges == []
    gu = g.cut_outgoing("X")
    assert gu.ch("X") == frozenset() and gu.bidirected_edges == [("X", "Y")]
    sub = g.subgraph({"X", "Y"})
    assert sub.nodes == ("X", "Y") and sub.bidirected_edges == [("X", "Y")] and not sub.directed_edges
    topo = g.topological_order()
    for u, v in g.directed_edges:
        assert topo.index(u) < topo.index(v)


def test_d_separation_textbook():
    g = ADMG.from_string(FD)
    assert not g.is_d_separated("D", "A")
    assert g.is_d_separated("I", "A", {"D"}) is False  # I -> A directly
    chain = ADMG.from_string("X -> Z -> Y")
    assert chain.is_d_separated("X", "Y", "Z") and not chain.is_d_separated("X", "Y")
    coll = ADMG.from_string("X -> Z; Y -> Z")
    assert coll.is_d_separated("X", "Y") and not coll.is_d_separated("X", "Y", "Z")
    bi = ADMG.from_string("X <-> Z; Z <-> Y")
    assert bi.is_d_separated("X", "Y") and not bi.is_d_separated("X", "Y", "Z")


def test_do_calculus_rules_textbook():
    fd = ADMG.from_string(FD)
    # P(I | do(D)) = P(I | D): no back-door from D to I
    assert rule2(fd, "I", "D")
    # P(A | do(I)) != P(A | I), but = P(A | I, D) (back-door adjustment by D)
    assert not rule2(fd, "A", "I") and rule2(fd, "A", "I", "D")
    # P(D | do(I)) = P(D): I is not an ancestor of D
    assert rule3(fd, "D", "I")
    assert not rule3(fd, "A", "D")
    # rule 1: P(A | do(I), D) uses D; observation of D cannot be dropped
    assert not rule1(fd, "A", "D", do="I")
    chain = ADMG.from_string("X -> Z -> Y")
    assert rule1(chain, "Y", "X", "Z")


@pytest.mark.parametrize("seed", range(60))
def test_fast_rule2_agrees_with_networkx_dseparation(seed):
    import numpy as np

    g = random_admg(7, seed=seed, avg_parents=1.4, bidirected=0.5, latent_groups=seed % 2)
    rng = np.random.default_rng(seed)
    nodes = list(g.nodes)
    for _ in range(10):
        k = int(rng.integers(1, 3))
        ys = set(rng.choice(nodes, size=k, replace=False))
        rest = [v for v in nodes if v not in ys]
        xs = set(rng.choice(rest, size=min(len(rest), int(rng.integers(1, 3))), replace=False))
        ds = set(v for v in rest if v not in xs and rng.random() < 0.2)
        assert rule2_holds(g, ys, xs, do=ds) == rule2(g, ys, xs, (), ds)
        assert marginally_connected(g, ys, xs) == (not g.is_d_separated(ys, xs))


def test_import_hgraph_does_not_import_torch():
    code = "import sys, hgraph, hgraph.plan, hgraph.scm, hgraph.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

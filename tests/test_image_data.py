"""Image SCM generators: frequencies against the exact discrete twins, rendering, caching.

Frequencies are compared cell by cell: ``|empirical - p| <= 5 sqrt(p (1 - p) / n) + 2 / n`` (five
standard errors; all datasets are seeded, so the checks are deterministic).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from hgraph import Factor
from whatifgan.data import image_scms as S
from whatifgan.data.image_scms import (
    PALETTE,
    colored_mnist2,
    frontdoor_colored_mnist,
    generate,
    load_image_scm,
    morpho_mnist,
    napkin_mnist,
    noisy_mechanism,
)
from whatifgan.data.morpho import ImageMorphology, get_intensity

POOL = 8  # base digits per class: keeps the one-off pool build to about a second
N = 5000


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("image_scms")


def _empirical(cols, vars, cards) -> np.ndarray:
    codes = [np.asarray(cols[v]) for v in vars]
    shape = tuple(cards[v] for v in vars)
    return np.bincount(np.ravel_multi_index(codes, shape), minlength=int(np.prod(shape))).reshape(shape) / len(codes[0])


def assert_matches(cols, truth: Factor, cards, what=""):
    emp = _empirical(cols, list(truth.vars), cards)
    p = truth.values
    n = len(np.asarray(cols[truth.vars[0]]))
    tol = 5 * np.sqrt(p * (1 - p) / n) + 2.0 / n
    bad = np.argwhere(np.abs(emp - p) > tol)
    assert bad.size == 0, (f"{what} {truth.vars}: cell {tuple(bad[0])} empirical {emp[tuple(bad[0])]:.4f} "
                           f"vs exact {p[tuple(bad[0])]:.4f}")
    return 0.5 * np.abs(emp - p).sum()


def check_colors(images: np.ndarray, colors: np.ndarray, classes=None):
    """The active RGB channels of every image are those of its colour's palette entry."""
    assert images.ndim == 4 and images.shape[1] == 3 and images.dtype == np.uint8
    active = images.reshape(len(images), 3, -1).max(axis=2) > 100
    want = PALETTE[np.asarray(colors) if classes is None else np.asarray(classes)[colors]].astype(bool)
    assert np.array_equal(active, want)


# ----------------------------------------------------------------------------- mechanisms
def test_noisy_mechanism_is_eta_p():
    g = np.array([2, 0, 1])
    f, q = noisy_mechanism(g, 3, 0.3)
    cpt = np.zeros((3, 3))
    for r in range(3):
        for e, w in enumerate(q):
            cpt[r, f[r, e]] += w
    assert np.allclose(cpt, 0.7 * np.eye(3)[g] + 0.1)
    f0, q0 = noisy_mechanism(g, 3, 0.0)  # no noise: a deterministic function
    assert q0.tolist() == [1.0] and f0[:, 0].tolist() == [2, 0, 1]
    with pytest.raises(ValueError):
        noisy_mechanism([3], 3, 0.1)


def test_napkin_twin_matches_the_papers_analytic_values():
    """ID-GEN Appendix F.2.4: P[X.d = W2.d] = 1 - p + p/10, P[X.t = W1.t] = (1 - p + p/3)^2 + 2 p^2/9,
    P[Y.c = W1.c] = (1 - p + p/6)^2 + 5 p^2/36, P[Y.t = X.t] = 1 - p + p/3."""
    p = 0.1
    scm = S.napkin_scm(p)

    def agree(a, b):
        t = scm.prob([a, b]).values
        return float(np.trace(t))

    assert agree("X_digit", "W2_digit") == pytest.approx(1 - p + p / 10)
    assert agree("X_thick", "W1_thick") == pytest.approx((1 - p + p / 3) ** 2 + 2 * p ** 2 / 9)
    assert agree("Y_color", "W1_color") == pytest.approx((1 - p + p / 6) ** 2 + 5 * p ** 2 / 36)
    assert agree("Y_thick", "X_thick") == pytest.approx(1 - p + p / 3)
    assert scm.graph.bidirected_edges  # latent colour and thickness confound W1 with X and Y


def test_frontdoor_twin_has_strong_backdoor_and_causal_paths():
    scm = S.frontdoor_scm()
    do = [scm.prob(["A"], do={"D": d}).values[1] for d in (0, 1)]
    cond = scm.prob(["A"], given=["D"]).transpose(["D", "A"]).values[:, 1]
    assert do[1] - do[0] > 0.3  # causal effect through the image
    assert abs(do[0] - cond[0]) > 0.1 and abs(cond[1] - cond[0]) > 0.6  # confounding


# ----------------------------------------------------------------------------- generators vs twins
def test_frontdoor_frequencies_and_images(cache):
    data = frontdoor_colored_mnist(N, cache_dir=cache, pool_per_class=POOL, progress=False)
    ds, scm = data
    cols = ds.columns
    assert list(data.graph.nodes) == ["D", "I", "A"] and data.variables["I"].shape == (3, 32, 32)
    assert cols["I"].shape == (N, 3, 32, 32) and cols["I"].dtype == np.uint8
    assert np.all(cols["I"][:, :, :2, :] == 0) and np.all(cols["I"][:, :, :, -2:] == 0)  # 28 px padded to 32
    assert_matches(cols, scm.joint(), scm.cards, "frontdoor joint")
    check_colors(cols["I"], cols["I_color"])
    assert np.array_equal(cols["I_digit"], cols["D"])  # the image shows digit D
    u = data.latents["obs"]["U"]
    assert 0.45 < u.mean() < 0.55 and np.mean(cols["D"] == u) > 0.85
    # the pool digit of every image has the attribute's class
    from whatifgan.data.image_scms import digit_pool

    pool = digit_pool("embedded", "train", (), POOL, cache_dir=cache)
    assert np.array_equal(pool.labels[data.latents["obs"]["I_base"]], np.array([0, 1])[cols["I_digit"]])


def test_napkin_frequencies_and_images(cache):
    data = napkin_mnist(N, cache_dir=cache, pool_per_class=POOL, progress=False)
    ds, scm = data
    cols = ds.columns
    for v in ("W1", "X", "Y"):
        assert cols[v].shape == (N, 3, 28, 28) and cols[v].dtype == np.uint8
        check_colors(cols[v], cols[f"{v}_color"])
    assert np.array_equal(cols["W2"], 2 * cols["W2_digit"] + cols["W2_color"])
    pairs = [("W1_digit", "W2_digit"), ("W1_color", "W2_color"), ("W2_digit", "X_digit"),
             ("W2_color", "X_color"), ("X_digit", "Y_digit"), ("W1_color", "Y_color"),
             ("W1_thick", "X_thick"), ("X_thick", "Y_thick"), ("W1_thick", "Y_thick"),
             ("X_color", "Y_color")]
    for a, b in pairs:
        assert_matches(cols, scm.prob([a, b]), scm.cards, "napkin")
    assert_matches(cols, scm.prob(["W1_color", "W2_color", "X_color", "Y_color"]), scm.cards, "napkin colours")
    lat = data.latents["obs"]
    assert np.mean(lat["Color"] == cols["Y_color"]) > 0.85 and np.mean(lat["Thickness"] == cols["X_thick"]) > 0.85
    # Y re-uses X's base image exactly when the digit was passed on (ID-GEN App. F.2.2)
    same = cols["Y_digit"] == cols["X_digit"]
    assert np.array_equal(lat["Y_base"] == lat["X_base"], same)
    # thickness codes order the measured stroke width: thin < regular < thick
    gray = cols["W1"][:150].max(axis=1)
    t = np.array([ImageMorphology(g).mean_thickness for g in gray])
    med = [np.median(t[cols["W1_thick"][:150] == k]) for k in range(3)]
    assert med[0] < 2.3 < med[1] < 3.6 < med[2]


def test_colored_mnist2_observational_and_interventional(cache):
    data = colored_mnist2(N, cache_dir=cache, pool_per_class=POOL, progress=False)
    scm = data.scm
    assert list(data.datasets) == ["obs", "do_X1_0", "do_X1_1"]
    assert set(data.graph.nodes) == {"X1", "X2", "W", "Color", "Y1", "Y2", "Thick", "Image1", "Image2"}
    from hgraph import ADMG
    from hgraph.library import graph_path

    shipped = ADMG.load(graph_path("colored_mnist2"))
    assert set(shipped.directed_edges) == set(data.graph.directed_edges)
    assert {frozenset(e) for e in shipped.bidirected_edges} == {frozenset(e) for e in data.graph.bidirected_edges}
    for name, do in (("obs", None), ("do_X1_0", {"X1": 0}), ("do_X1_1", {"X1": 1})):
        cols = data.datasets[name].columns
        if do:
            assert np.all(cols["X1"] == do["X1"]) and data.datasets[name].targets == ("X1",)
        assert_matches(cols, scm.prob(["X1", "X2", "Color"], do=do), scm.cards, name)
        assert_matches(cols, scm.prob(["W", "Thick"], do=do), scm.cards, name)
        assert_matches(cols, scm.prob(["Y1", "Y2"], do=do), scm.cards, name)
        for v in ("Image1", "Image2"):
            assert cols[v].shape == (N, 3, 28, 28)
            check_colors(cols[v], cols["Color"])
    # the confounder U2 makes X2 and Color dependent observationally but not under do(X2)
    obs = data.datasets["obs"].columns
    assert np.mean((obs["X2"] % 3) == obs["Color"]) > 0.5


def test_morpho_frequencies_and_intensity(cache):
    data = morpho_mnist(2000, cache_dir=cache, pool_per_class=POOL, progress=False)
    ds, scm = data
    cols = ds.columns
    assert cols["Image"].shape == (2000, 1, 28, 28)
    assert_matches(cols, scm.joint(), scm.cards, "morpho")
    measured = np.array([get_intensity(im[0]) for im in cols["Image"][:200]])
    target = np.asarray(S.INTENSITY_LEVELS)[cols["Intensity"][:200]]
    assert np.median(np.abs(measured - target) / target) < 0.05


# ----------------------------------------------------------------------------- caching
def test_cache_hit_miss_and_reload(tmp_path, cache):
    kw = dict(pool_per_class=POOL, progress=False)
    a = frontdoor_colored_mnist(500, cache_dir=tmp_path, **kw)
    manifest = json.loads((tmp_path / "frontdoor" / "manifest.json").read_text())
    assert manifest["config_hash"] == a.config_hash and manifest["seed"] == 0
    assert manifest["config"]["n"] == 500 and manifest["config"]["params"]["p"] == 0.1
    mtime = (tmp_path / "frontdoor" / "obs.npz").stat().st_mtime_ns
    b = frontdoor_colored_mnist(500, cache_dir=tmp_path, **kw)  # hit: files untouched
    assert b.config_hash == a.config_hash
    assert (tmp_path / "frontdoor" / "obs.npz").stat().st_mtime_ns == mtime
    assert np.array_equal(a.dataset.columns["I"], b.dataset.columns["I"])
    assert np.array_equal(a.latents["obs"]["U"], b.latents["obs"]["U"])
    c = frontdoor_colored_mnist(500, p=0.2, cache_dir=tmp_path, **kw)  # miss: config changed
    assert c.config_hash != a.config_hash
    assert json.loads((tmp_path / "frontdoor" / "manifest.json").read_text())["config_hash"] == c.config_hash
    d = frontdoor_colored_mnist(500, p=0.2, seed=1, cache_dir=tmp_path, **kw)  # the seed too
    assert d.config_hash != c.config_hash
    assert not np.array_equal(d.dataset.columns["A"], c.dataset.columns["A"])
    e = load_image_scm(tmp_path / "frontdoor")
    assert e.config_hash == d.config_hash and np.array_equal(e.dataset.columns["I"], d.dataset.columns["I"])
    f = frontdoor_colored_mnist(500, p=0.2, seed=1, cache_dir=False, **kw)  # in memory: same data
    assert f.path is None and np.array_equal(f.dataset.columns["I"], d.dataset.columns["I"])
    t = d.variant(split="test", n=200)
    assert t.path.name == "frontdoor_test" and len(t.dataset) == 200
    assert (tmp_path / "frontdoor" / "manifest.json").is_file()  # the training copy is kept


def test_bad_arguments_are_reported(tmp_path):
    with pytest.raises(ValueError, match="unknown image dataset"):
        generate("nope", cache_dir=False)
    with pytest.raises(TypeError, match="unknown parameter"):
        generate("napkin", colour=3, cache_dir=False)
    with pytest.raises(ValueError, match="size"):
        napkin_mnist(10, size=30, cache_dir=False)
    with pytest.raises(ValueError, match="not an observed variable"):
        colored_mnist2(10, interventions={"bad": {"U1": 0}}, cache_dir=False)


def test_rendering_10k_images_is_fast(cache):
    napkin_mnist(100, cache_dir=cache, pool_per_class=POOL, progress=False, seed=5)  # pool ready
    t0 = time.perf_counter()
    data = napkin_mnist(10_000, cache_dir=False, pool_per_class=POOL, progress=False, seed=7, size=32)
    dt = time.perf_counter() - t0
    assert len(data.dataset) == 10_000 and data.dataset.columns["Y"].shape == (10_000, 3, 32, 32)
    assert dt < 10.0, f"10k napkin rows (30k images) took {dt:.1f} s"

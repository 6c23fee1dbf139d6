"""Image metrics: attribute classifiers (tiny training runs), attributes -> TVD against the twin, FID."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hgraph import Factor
from whatifgan.data.image_scms import ImageAttribute, napkin_mnist
from whatifgan.metrics.images import (
    AttributeClassifiers,
    attribute_distribution,
    attribute_tvd,
    feature_statistics,
    fid,
    fid_per_class,
    frechet_distance,
    image_attributes,
    train_attribute_classifiers,
)

POOL = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cache = tmp_path_factory.mktemp("image_metrics")
    data = napkin_mnist(1000, cache_dir=cache, pool_per_class=POOL, progress=False)
    held = data.variant(split="test", n=300)  # unseen base digits
    t0 = time.perf_counter()
    clf = train_attribute_classifiers(data, kinds=["color", "digit"], held_out=held, steps=40, batch_size=32,
                                      channels=(16, 32, 32), feature_dim=32, cache_dir=cache, progress=False)
    seconds = time.perf_counter() - t0
    yield data, held, clf, cache, seconds


def test_tiny_colour_classifier_beats_chance_widely(setup):
    data, held, clf, cache, _ = setup
    assert clf.accuracy["color"] > 0.8  # chance is 1/6
    assert clf.accuracy["digit"] > 0.2  # chance is 1/10; 40 steps on 80 base digits
    assert clf.info["config_hash"] == data.config_hash and clf.info["n_test"]["color"] == 3 * 300
    assert clf.temperatures["color"] > 0
    p = clf.predict_proba(held.dataset.columns["Y"][:10], "color")
    assert p.shape == (10, 6) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_classifiers_are_cached_by_manifest_hash(setup):
    data, held, clf, cache, seconds = setup
    assert clf.path is not None and data.config_hash[:16] in clf.path.name
    t0 = time.perf_counter()
    again = train_attribute_classifiers(data, kinds=["color", "digit"], held_out=held, steps=40, batch_size=32,
                                        channels=(16, 32, 32), feature_dim=32, cache_dir=cache, progress=False)
    assert time.perf_counter() - t0 < max(1.0, 0.5 * seconds)  # loaded, not retrained
    assert again.accuracy == clf.accuracy and again.path == clf.path
    x = held.dataset.columns["W1"][:50]
    assert np.array_equal(again.predict(x, "digit"), clf.predict(x, "digit"))
    loaded = AttributeClassifiers.load(clf.path)
    assert np.allclose(loaded.features(x), clf.features(x), atol=1e-5)


def test_images_to_attributes_and_tvd_against_the_twin(setup):
    data, held, clf, _, _ = setup
    cols = held.dataset.columns
    codes = image_attributes({"Y": cols["Y"], "X": cols["X"]}, data, clf)
    assert set(codes) == {"Y_color", "Y_digit", "X_color", "X_digit"}
    assert np.mean(codes["Y_color"] == cols["Y_color"]) > 0.8
    # float images in [-1, 1] (generator outputs) give the same codes as uint8
    as_float = torch.as_tensor(cols["Y"]).float() / 127.5 - 1
    assert np.array_equal(image_attributes({"Y": as_float}, data, clf)["Y_color"], codes["Y_color"])
    tv = attribute_tvd(codes, data.scm.prob(["Y_color"]))
    assert tv < 0.15
    # a wrong ground truth is far
    wrong = Factor(["Y_color"], np.eye(6)[0])
    assert attribute_tvd(codes, wrong) > 0.6
    cond = attribute_tvd(codes, data.scm.prob(["Y_color"], given=["X_color"]), given=["X_color"])
    assert 0 <= cond < 0.25


def test_invalid_predictions_count_fully():
    attr = ImageAttribute("X_color", "color", (0, 1), 6)
    assert attr.codes(np.array([0, 1, 2, 5])).tolist() == [0, 1, -1, -1]
    codes = {"X_color": np.array([0, 0, 1, -1])}
    emp = attribute_distribution(codes, ["X_color"], {"X_color": 2})
    assert emp.values.tolist() == [0.5, 0.25, 0.25]
    truth = Factor(["X_color"], np.array([0.5, 0.5]))
    assert attribute_tvd(codes, truth) == pytest.approx(0.25)


def test_fid_is_zero_on_itself_and_grows_with_perturbation(setup):
    data, held, clf, _, _ = setup
    x = held.dataset.columns["W1"]
    assert fid(x, x, clf) == pytest.approx(0.0, abs=1e-6)
    xf = torch.as_tensor(x).float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    vals = [fid(x, (xf + s * torch.randn(xf.shape, generator=g)).clamp(-1, 1), clf) for s in (0.05, 0.3, 0.8)]
    assert 0 < vals[0] < vals[1] < vals[2], vals
    # two independent samples of the same distribution are closer than a perturbed one
    other = data.variant(split="test", n=300, seed=9).dataset.columns["W1"]
    assert fid(x, other, clf) < vals[2]
    per = fid_per_class(x, x, clf, min_count=5)
    assert per["per_class"] and all(v == pytest.approx(0.0, abs=1e-6) for v in per["per_class"].values())
    per2 = fid_per_class(x, x, clf, real_labels=held.dataset.columns["W1_digit"],
                         fake_labels=held.dataset.columns["W1_digit"], min_count=5)
    assert set(per2["counts"]) == set(range(10))


def test_frechet_distance_closed_form():
    assert frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]) == pytest.approx(1 + 1 + 4 - 2 * 2)
    f = np.random.default_rng(0).normal(size=(200, 4))
    mu, s = feature_statistics(f)
    assert frechet_distance(mu, s, mu + 2, s) == pytest.approx(16.0)

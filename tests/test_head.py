"""The shared soft-label distribution regression head: bins, soft targets, training, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from forelen_bench.errors import ForelenError
from forelen_bench.predictors._head import (
    LAYOUTS, SoftLabelHead, assign_bins, bin_centres, bin_edges, soft_labels,
)


def lengths(n: int, seed: int = 0) -> np.ndarray:
    """Skewed, length-like targets (tokens), as real output lengths are."""
    return np.round(np.random.default_rng(seed).lognormal(5.0, 0.8, n)) + 1


def mapping(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth non-linear map from 8 features to a length between 50 and 650 tokens."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 8)).astype(np.float32)
    y = 50 + 600 / (1 + np.exp(-(X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.5)))
    return X, np.round(y)


def test_soft_labels_sum_to_one_peak_at_the_true_bin_and_decay_with_distance():
    k = 20
    bins = np.array([0, 7, 19])
    p = soft_labels(bins, k)
    assert p.shape == (3, k)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    for row, i in zip(p, bins):
        assert row.argmax() == i
        assert np.all(np.diff(row[i:]) < 0) and np.all(np.diff(row[: i + 1]) > 0)
        np.testing.assert_allclose(row[i - 1] / row[i] if i else row[1] / row[0], np.exp(-1))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_gives_increasing_edges_and_centres_inside_the_train_range(layout):
    y, k = lengths(2000), 20
    edges = bin_edges(y, k, layout)
    centres = bin_centres(y, edges)
    assert edges.shape == (k + 1,) and np.all(np.diff(edges) > 0)
    assert centres.shape == (k,) and np.all(np.diff(centres) >= 0)
    assert y.min() <= centres.min() and centres.max() <= y.max()
    idx = assign_bins(y, edges)
    assert idx.min() == 0 and idx.max() == k - 1
    assert np.all((edges[idx] <= y) & (y < edges[idx + 1]))


def test_unknown_layout_and_preset_are_refused():
    with pytest.raises(ValueError, match="layout"):
        bin_edges(lengths(50), 20, "cubic")
    X, y = mapping(40)
    with pytest.raises(ForelenError, match="preset 'huge'"):
        SoftLabelHead(preset="huge").fit(X, y)


def test_head_learns_a_simple_mapping_within_the_centres_range():
    X, y = mapping(700)
    head = SoftLabelHead(preset="small").fit(X[:400], y[:400], X[400:550], y[400:550])
    pred = head.predict(X[550:])
    assert pred.shape == (150,) and pred.dtype == np.float64
    assert head.centres_.min() <= pred.min() and pred.max() <= head.centres_.max()
    mae = np.mean(np.abs(pred - y[550:]))
    constant = np.mean(np.abs(np.median(y[:400]) - y[550:]))
    assert mae < 0.5 * constant, (mae, constant)
    np.testing.assert_allclose(head.predict_proba(X[:5]).sum(axis=1), 1.0, rtol=1e-6)


def test_same_seed_same_predictions_other_seed_other_predictions():
    X, y = mapping(200)

    def run(seed):
        return SoftLabelHead(preset="paper", seed=seed).fit(X[:150], y[:150]).predict(X[150:])

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.array_equal(run(7), run(8))


def test_a_feature_constant_on_train_keeps_test_predictions_finite():
    X, y = mapping(200)
    X[:, 3] = 1.0
    head = SoftLabelHead(preset="paper").fit(X, y)
    X_new = X[:10].copy()
    X_new[:, 3] = 1.5  # a value never seen in training
    new, old = head.predict(X_new), head.predict(X[:10])
    # dividing by a ~0 std would swamp every other feature and collapse the predictions to one value
    assert np.isfinite(new).all() and np.corrcoef(new, old)[0, 1] > 0.9


def test_float16_input_and_history():
    X, y = mapping(200)
    head = SoftLabelHead(preset="paper").fit(X.astype(np.float16), y)
    assert head.epochs_run_ == len(head.history_) <= 10
    assert np.isfinite(head.predict(X.astype(np.float16))).all()
    assert head.config()["train"]["lr"] == 2e-5


def test_bin_centres_mean_or_midpoint_recorded():
    import numpy as np

    from forelen_bench.predictors._head import SoftLabelHead, bin_centres, bin_edges

    y = np.array([1, 2, 3, 10, 11, 50, 90, 100], float)
    edges = np.array([-np.inf, 5, 20, np.inf])
    assert bin_centres(y, edges).tolist() == [2.0, 10.5, 80.0]  # means of each bin's targets
    assert bin_centres(y, edges, "midpoint").tolist() == [3.0, 12.5, 60.0]  # 1..5, 5..20, 20..100
    with pytest.raises(ValueError):
        bin_centres(y, edges, "median")
    assert len(bin_edges(y, 4)) == 5
    assert SoftLabelHead(centres="midpoint").config()["centres"] == "midpoint"

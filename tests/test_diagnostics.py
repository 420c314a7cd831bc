"""Embedding diagnostics: Kraskov k-NN mutual information against known values, variability,
representation overlap, the cosine matrix and its plot, and ``diagnose`` from Python and the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
from scipy import integrate
from scipy.stats import norm

import aib
from sb3_dmash import DMASHSAC
from sb3_dmash.experiments import cli
from sb3_dmash.experiments.diagnostics import (
    context_means,
    cosine_color_range,
    cosine_figure,
    cosine_matrix,
    diagnose,
    entropy_of,
    kraskov_mi,
    kraskov_mi_discrete,
    pca_2d,
    plot_cosine_matrix,
    representation_overlap,
    variability,
    within_context_variability,
)


def correlated_gaussians(rho: float, d: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y, -0.5 * d * np.log(1 - rho**2)  # the exact MI of d independent pairs


@pytest.mark.parametrize("metric", ["euclidean", "chebyshev"])
@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_kraskov_mi_of_correlated_gaussians(rho, metric):
    x, y, exact = correlated_gaussians(rho, 1, 3000, seed=1)
    # L2 is biased low at finite N (see the docstring), hence the wider tolerance
    assert kraskov_mi(x, y, k=3, metric=metric) == pytest.approx(exact, abs=0.05 if metric == "chebyshev" else 0.07)


def test_kraskov_mi_vector_case_and_invariance():
    x, y, exact = correlated_gaussians(0.7, 2, 3000, seed=2)
    estimate = kraskov_mi(x, y)
    assert estimate == pytest.approx(exact, abs=0.1)
    # MI is invariant to rescaling each variable (the estimator standardises columns)
    assert kraskov_mi(100 * x, 0.01 * y) == pytest.approx(estimate, abs=1e-6)
    with pytest.raises(ValueError, match="k="):
        kraskov_mi(x[:3], y[:3], k=3)
    with pytest.raises(ValueError, match="metric"):
        kraskov_mi(x, y, metric="cosine")


def test_kraskov_mi_discrete_known_values():
    rng = np.random.default_rng(0)
    n = 3000
    labels = rng.integers(0, 4, n)
    separated = labels[:, None] * 50.0 + rng.standard_normal((n, 2))
    assert kraskov_mi_discrete(separated, labels) == pytest.approx(np.log(4), abs=0.01)
    assert kraskov_mi_discrete(rng.standard_normal((n, 2)), labels) == pytest.approx(0.0, abs=0.02)
    # a two-Gaussian mixture: I(X; C) = H(X) - H(X | C), computed by quadrature
    mu = 1.0
    rng = np.random.default_rng(1)  # sd of the estimate over seeds: about 0.009 nats (measured)
    labels = rng.integers(0, 2, n)
    x = np.where(labels == 1, mu, -mu) + rng.standard_normal(n)

    def density(t):
        return 0.5 * norm.pdf(t, mu) + 0.5 * norm.pdf(t, -mu)

    h_x = integrate.quad(lambda t: -density(t) * np.log(density(t)), -15, 15)[0]
    exact = h_x - 0.5 * np.log(2 * np.pi * np.e)
    assert kraskov_mi_discrete(x, labels) == pytest.approx(exact, abs=0.035)
    # vector-valued labels (one context vector per sample) are grouped by their rows
    contexts = np.stack([labels, 1 - labels], axis=1).astype(float)
    assert kraskov_mi_discrete(x, contexts) == pytest.approx(kraskov_mi_discrete(x, labels))


def test_variability_overlap_and_cosines():
    rng = np.random.default_rng(0)
    z = rng.multivariate_normal([0, 0, 0], np.diag([1.0, 4.0, 0.25]), size=20000)
    assert variability(z) == pytest.approx((1 + 4 + 0.25) / 3, rel=0.03)
    labels = np.repeat([0, 1], 10000)
    shifted = z + np.where(labels[:, None] == 1, 10.0, 0.0)
    assert within_context_variability(shifted, labels) == pytest.approx(variability(z), rel=0.03)
    assert variability(shifted) > 20  # between-context spread counts in the overall variability
    means = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    matrix = cosine_matrix(means)
    s = 1 / np.sqrt(2)
    expected = np.array([[1, 0, s, -1], [0, 1, s, 0], [s, s, 1, -s], [-1, 0, -s, 1]])
    np.testing.assert_allclose(matrix, expected, atol=1e-12)
    assert representation_overlap(means) == pytest.approx((0 + s - 1 + s + 0 - s) / 6)
    data = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    means, unique = context_means(data, np.array([5, 5, 2]))
    np.testing.assert_allclose(means, [[0.0, 2.0], [2.0, 0.0]])
    assert unique.tolist() == [2, 5]


def test_plot_cosine_matrix(tmp_path):
    path = plot_cosine_matrix(np.eye(3), ["a", "b", "c"], tmp_path / "sub" / "cos.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cosine_colours_span_the_data():
    # SimNorm cosines: all within [0.95, 1]; on a fixed [-1, 1] scale 0.98 and 1.00 would share a colour
    matrix = np.array([[1.0, 0.98, 0.95], [0.98, 1.0, 0.99], [0.95, 0.99, 1.0]])
    vmin, vmax = cosine_color_range(matrix)
    assert 0.94 <= vmin < 0.95 and vmax == 1.0  # a small margin below the minimum, clipped at 1 above
    fig = cosine_figure(matrix, ["a", "b", "c"])
    image = fig.axes[0].images[0]
    assert (image.norm.vmin, image.norm.vmax) == (vmin, vmax)
    assert image.norm(1.0) - image.norm(0.98) > 0.3  # a third of the colour map apart (0.01 on [-1, 1])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 9 and "0.98" in texts and "0.95" in texts
    assert f"{vmin:.3f} to {vmax:.3f}" in fig.axes[1].get_ylabel()  # the colour bar says the range
    # a constant matrix still gets a usable range; negative cosines (DMA's unbounded z) are covered
    assert cosine_color_range(np.ones((2, 2)))[0] < 1.0
    assert cosine_color_range(np.array([[1.0, -0.5], [-0.5, 1.0]]))[0] < -0.5


def test_pca_2d_and_entropy():
    rng = np.random.default_rng(0)
    t = rng.standard_normal(500)
    z = np.stack([3 * t, -3 * t, 0.1 * rng.standard_normal(500)], axis=1) + 5.0
    coords, ratio = pca_2d(z)
    assert coords.shape == (500, 2) and ratio[0] > 0.99 and ratio.sum() <= 1 + 1e-12
    assert abs(np.corrcoef(coords[:, 0], t)[0, 1]) > 0.999  # the first axis is the direction of spread
    np.testing.assert_allclose(coords.mean(axis=0), 0.0, atol=1e-9)
    coords, ratio = pca_2d(t)  # one-dimensional z: the second axis is empty
    assert ratio[1] == 0 and (coords[:, 1] == 0).all()
    assert entropy_of(np.repeat([0, 1, 2], 10)) == pytest.approx(np.log(3))
    assert entropy_of(np.array([[1.0, 0.8], [1.0, 0.8], [-1.0, 0.8], [-1.0, 1.3]])) == pytest.approx(
        -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))
    )


@pytest.fixture(scope="module")
def tiny_model():
    th.set_num_threads(1)
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=0)
    model = DMASHSAC(
        "MlpPolicy",
        env,
        learning_starts=20 * 4,
        batch_size=40,
        seed=0,
        policy_kwargs=dict(net_arch=[16], hypernet_arch=[8], encoder_dim=8),
        device="cpu",
    )
    model.learn(20 * 10)
    return model


def test_diagnose_handcrafted_train(tiny_model, tmp_path):
    result = diagnose(tiny_model, "AIB-DI-v0", "handcrafted_train", n_episodes=1, steps_per_episode=30, out=tmp_path)
    assert result.n_samples == 6 * 30
    assert result.context_keys == ["mass", "action_factor"]
    assert result.labels == ["m=0.8, a=+1", "m=1, a=+1", "m=1.3, a=+1", "m=0.8, a=-1", "m=1, a=-1", "m=1.3, a=-1"]
    assert result.cosine_matrix.shape == (6, 6)
    np.testing.assert_allclose(np.diag(result.cosine_matrix), 1.0, atol=1e-6)
    np.testing.assert_allclose(result.cosine_matrix, result.cosine_matrix.T)
    # SimNorm embeddings are nonnegative: cosines in [0, 1]
    assert (result.cosine_matrix >= -1e-9).all()
    assert -0.1 < result.mutual_information <= np.log(6) + 0.05
    assert set(result.mutual_information_per_key) == {"mass", "action_factor"}
    assert result.variability >= result.within_context_variability >= 0
    upper = result.cosine_matrix[np.triu_indices(6, k=1)]
    assert result.representation_overlap == pytest.approx(upper.mean())
    saved = json.loads((tmp_path / "diagnostics.json").read_text())
    assert saved["representation_overlap"] == pytest.approx(result.representation_overlap)
    assert (tmp_path / "cosine.png").read_bytes()[:4] == b"\x89PNG"
    assert result.projection == tmp_path / "projection.png" and result.projection.read_bytes()[:4] == b"\x89PNG"
    # I(z; c) is bounded by H(c): log 6 contexts, log 3 masses, log 2 signs (equal samples per context)
    assert result.mutual_information_max == pytest.approx(np.log(6))
    assert result.mutual_information_max_per_key == pytest.approx({"mass": np.log(3), "action_factor": np.log(2)})
    ranges = result.cosine_ranges()
    inverted = np.array([False] * 3 + [True] * 3)
    between = result.cosine_matrix[np.ix_(~inverted, inverted)]
    assert ranges["between_modes"] == pytest.approx((between.min(), between.max()))
    assert ranges["within_modes"][1] <= 1.0 + 1e-9 and ranges["between_contexts"][0] == pytest.approx(
        min(ranges["within_modes"][0], ranges["between_modes"][0])
    )
    assert saved["cosine_ranges"]["between_modes"] == pytest.approx(list(ranges["between_modes"]))
    text = result.format()
    assert 4 <= len(text.splitlines()) <= 6
    assert "AIB-DI-v0 handcrafted_train: 180 samples of z from 6 contexts" in text
    assert f"mass {result.mutual_information_per_key['mass']:.2f} of max {np.log(3):.2f}" in text
    assert f"action_factor {result.mutual_information_per_key['action_factor']:.2f} of max {np.log(2):.2f}" in text
    assert f"representation overlap (mean cosine of context means): {result.representation_overlap:.3f}" in text
    lo, hi = ranges["between_modes"]
    assert f"between modes [{lo:.3f}, {hi:.3f}]" in text and "within a mode [" in text


def test_diagnose_cli(tiny_model, tmp_path, capsys):
    path = tmp_path / "model.zip"
    tiny_model.save(path)
    code = cli.main(
        ["diagnose", str(path), "--env", "AIB-DI-v0", "--split", "eval_in", "--episodes", "1", "--steps", "5",
         "--out", str(tmp_path / "diag")]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 8  # a summary for people, not the JSON
    assert out.startswith("AIB-DI-v0 eval_in: 100 samples of z from 20 contexts (k = 3)\n")
    assert "I(z; c) in nats: context " in out and "representation overlap" in out and "cosine of context means" in out
    summary = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())  # the full JSON is still written
    assert summary["split"] == "eval_in" and summary["n_samples"] == 20 * 5 and len(summary["labels"]) == 20
    for name in ("cosine.png", "projection.png"):
        assert (tmp_path / "diag" / name).read_bytes()[:4] == b"\x89PNG"
    # --json: the full JSON on stdout for scripts
    assert cli.main(["diagnose", str(path), "--env", "AIB-DI-v0", "--split", "eval_in", "--episodes", "1", "--steps", "3",
                     "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 20 * 3 and len(summary["cosine_matrix"]) == 20


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--episodes", "0", "n_episodes=0 (--episodes) must be an integer >= 1"),
        ("--steps", "0", "steps_per_episode=0 (--steps) must be an integer >= 1 (or None, i.e. no --steps"),
        ("--k", "0", "k=0 (--k) must be an integer >= 1"),
        ("--episodes", "-3", "n_episodes=-3 (--episodes) must be an integer >= 1"),
    ],
)
def test_diagnose_rejects_bad_counts(tmp_path, capsys, flag, value, message):
    # refused before the model is even loaded (there is none here): exit status 2, one line, no traceback
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["diagnose", str(tmp_path / "missing.zip"), "--env", "AIB-DI-v0", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"sb3-dmash diagnose: error: {message}" + err.split(message)[1] and err.count("\n") == 1
    assert "Traceback" not in err


def test_diagnose_rejects_bad_counts_in_python(tiny_model):
    with pytest.raises(ValueError, match=r"n_episodes=0 \(--episodes\) must be an integer >= 1"):
        diagnose(tiny_model, "AIB-DI-v0", n_episodes=0)
    with pytest.raises(ValueError, match=r"steps_per_episode=0 "):
        diagnose(tiny_model, "AIB-DI-v0", steps_per_episode=0)
    with pytest.raises(ValueError, match=r"k=0 "):
        diagnose(tiny_model, "AIB-DI-v0", k=0)


def test_diagnose_needs_an_inferred_context():
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=0)
    model = DMASHSAC("MlpPolicy", env, method="dr", batch_size=40, policy_kwargs={"net_arch": [8]}, device="cpu")
    with pytest.raises(ValueError, match="infers no context"):
        diagnose(model, "AIB-DI-v0", "train", n_episodes=1, steps_per_episode=2)

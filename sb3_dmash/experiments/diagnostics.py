"""Offline diagnostics of the inferred context z (never run inside training; ``docs/protocol.md`` §4).

:func:`collect_embeddings` rolls a trained model out on one split of an AIB environment (or on the six
``handcrafted_train`` contexts of DI), carrying the context window as
:meth:`~sb3_dmash.dmash.policies.DMASHPolicy.predict` does, and returns the eval-mode z of every visited step with the
true context. On top of it:

* :func:`kraskov_mi` - informativeness I(z; c), the Kraskov-Stoegbauer-Grassberger k-NN estimator (k = 3), with
  scipy's ``cKDTree``;
* :func:`variability` - tr(Cov z) / d_z;
* :func:`context_means`, :func:`cosine_matrix`, :func:`representation_overlap` - the mean pairwise cosine similarity
  of the per-context mean embeddings, and the matrix itself (the paper's Figure 4), :func:`plot_cosine_matrix`;
* :func:`pca_2d`, :func:`plot_projection` - the embeddings projected on their two principal axes, one colour per
  context (the paper's Figure 4, left);
* :func:`diagnose` - all of them for a model, an env and a split (``sb3-dmash diagnose`` on the command line);
  :meth:`DiagnosticsResult.format` is the short summary it prints;
* :func:`linear_probe_accuracy` - whether a linear classifier on z recovers a binary context factor.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from sb3_dmash.experiments.utils import require


def collect_embeddings(
    model: Any,
    env_id: str,
    split: str = "train",
    n_episodes: int = 2,
    steps_per_episode: int | None = None,
    skip_first: int | None = None,
    deterministic: bool = True,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    actions: str = "policy",
) -> dict[str, np.ndarray]:
    """Roll ``model`` out on the 20 contexts of ``split`` and record z at every step.

    :param model: a trained :class:`~sb3_dmash.DMASHSAC`.
    :param env_id: an AIB id.
    :param split: the split whose contexts are visited (one per sub-env): ``"train"``, ``"eval_in"``,
        ``"eval_out"`` (20 contexts) or ``"handcrafted_train"`` (DI: action_factor +-1 x mass {0.8, 1.0, 1.3}).
    :param n_episodes: episodes per context.
    :param steps_per_episode: steps recorded per episode (default: the whole episode).
    :param skip_first: steps at the start of each episode that are not recorded (default: K, so that every recorded
        window holds K real transitions).
    :param deterministic: deterministic actions.
    :param seed: reset seed of episode 0 (episode e uses ``seed + e``).
    :param env_kwargs: further env kwargs.
    :param actions: ``"policy"`` (the model acts) or ``"random"`` (uniform random actions, seeded; the window still
        records them): random actions keep the windows informative about the dynamics whatever the policy does (a
        policy pushing into a wall produces windows that carry no information about the actuator sign).
    :return: ``{"z": (N, context_dim), "context": (N, n_context_keys), "context_keys": (n_keys,), "context_index": (N,),
        "episode": (N,)}``.
    """
    import aib

    check_rollout_args(n_episodes=n_episodes, steps_per_episode=steps_per_episode)
    if actions not in ("policy", "random"):
        raise ValueError(f"actions={actions!r} is not allowed; expected 'policy' or 'random'")
    if policy_window_free(model):
        raise ValueError(
            f"method {getattr(model, 'method', type(model).__name__)!r} infers no context (no z); the embedding "
            "diagnostics need an inferred-context method (dmash, dma_star, dma, dma_pearl)"
        )
    venv = _context_vec_env(env_id, split, seed, env_kwargs)
    policy = model.policy
    keys = list(aib.context_variables(env_id, **({"k": env_kwargs["k"]} if env_kwargs and "k" in env_kwargs else {})))
    keys = [var.name for var in keys]
    skip = policy.history_len if skip_first is None else skip_first
    zs, contexts, indices, episodes = [], [], [], []
    rng = np.random.default_rng(seed)
    for episode in range(n_episodes):
        venv.seed(seed + episode)
        obs = venv.reset()
        infos = venv.reset_infos
        state, starts = None, np.ones(venv.num_envs, dtype=bool)
        t = 0
        while True:
            env_actions, state = policy.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
            if actions == "random":
                scaled = rng.uniform(-1.0, 1.0, size=env_actions.shape).astype(np.float32)
                env_actions = policy.unscale_action(scaled)
                state = policy.update_history(state, obs, scaled)
            if t >= skip and (steps_per_episode is None or t < skip + steps_per_episode):
                with th.no_grad():
                    z = policy.context(th.as_tensor(state.window, device=policy.device), training=False)
                zs.append(z.cpu().numpy())
                contexts.append([[info["context"][k] for k in keys] for info in infos])
                indices.append(np.arange(venv.num_envs))
                episodes.append(np.full(venv.num_envs, episode))
            obs, _, dones, infos = venv.step(env_actions)
            starts = dones
            t += 1
            if dones.any() or (steps_per_episode is not None and t >= skip + steps_per_episode):
                break
    venv.close()
    return {
        "z": np.concatenate(zs),
        "context": np.asarray(np.concatenate(contexts), dtype=np.float64),
        "context_keys": np.array(keys),
        "context_index": np.concatenate(indices),
        "episode": np.concatenate(episodes),
    }


_CLI_NAMES = {"n_episodes": "--episodes", "steps_per_episode": "--steps", "k": "--k"}


def check_rollout_args(**values: int | None) -> None:
    """Raise ``ValueError`` naming the parameter, its value and what is allowed for a count below 1.

    ``n_episodes`` and ``k`` must be integers >= 1; ``steps_per_episode`` is ``None`` (whole episodes) or >= 1.
    """
    for name, value in values.items():
        if value is None and name == "steps_per_episode":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            allowed = "an integer >= 1"
            if name == "steps_per_episode":
                allowed += " (or None, i.e. no --steps: the whole episode)"
            flag = f" ({_CLI_NAMES[name]})" if name in _CLI_NAMES else ""
            raise ValueError(f"{name}={value!r}{flag} must be {allowed}")


def policy_window_free(model: Any) -> bool:
    """Whether ``model`` has no context encoder (DR, Concat, Decision Adapter, SB3's SAC)."""
    policy = getattr(model, "policy", None)
    return not getattr(policy, "uses_history", False) or getattr(policy, "context", None) is None


def _context_vec_env(env_id: str, split: str, seed: int, env_kwargs: dict[str, Any] | None) -> Any:
    """The 20 contexts of a named split (``aib.make_vec_env``), or one sub-env per context of another named set."""
    import aib

    if split in aib.SPLITS:
        return aib.make_vec_env(env_id, split, n_envs=20, seed=seed, env_kwargs=env_kwargs)
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    kwargs = dict(env_kwargs or {})
    contexts = aib.get_contexts(env_id, split, **({"k": kwargs["k"]} if "k" in kwargs else {}))
    fns = [lambda c=c: gym.make(env_id, context=c, **kwargs) for c in contexts]
    venv = DummyVecEnv(fns)
    venv.seed(seed)
    return venv


def linear_probe_accuracy(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``(z_test, y_test)`` of a least-squares linear classifier fitted on ``(z_train, y_train)``.

    ``y`` holds two classes (any two values, e.g. the inversion sign -1/+1).
    """
    classes = np.unique(y_train)
    if len(classes) != 2:
        raise ValueError(f"the probe needs exactly two classes in y_train, got {classes}")
    target = np.where(y_train == classes[1], 1.0, -1.0)
    design = np.hstack([z_train, np.ones((len(z_train), 1))])
    weights, *_ = np.linalg.lstsq(design, target, rcond=None)
    scores = np.hstack([z_test, np.ones((len(z_test), 1))]) @ weights
    predicted = np.where(scores > 0, classes[1], classes[0])
    return float(np.mean(predicted == y_test))


# ---------------------------------------------------------------------------------------------------------- metrics
def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _log_unit_ball(d: int) -> float:
    require("scipy", "analysis")  # a clear error without sb3-dmash[analysis]
    from scipy.special import gammaln

    return d / 2 * np.log(np.pi) - float(gammaln(d / 2 + 1))


def kraskov_mi(
    x: np.ndarray,
    y: np.ndarray,
    k: int = 3,
    metric: str = "chebyshev",
    standardize: bool = True,
    noise: float = 1e-10,
    seed: int = 0,
) -> float:
    """Mutual information I(X; Y) in nats for continuous X and Y, Kraskov-Stoegbauer-Grassberger estimator 1.

    For each sample, eps_i is the distance to its k-th neighbour in the joint space and n_x(i), n_y(i) count the
    samples strictly closer than eps_i in each marginal space:
    ``I = psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)> + log(V_dx V_dy / V_(dx+dy))``, where ``V_d`` is the volume of
    the unit ball of the norm (the last term vanishes for the max-norm and is ``log`` of unit-ball volumes for the L2
    norm). The estimate can be slightly negative for independent variables. For a discrete Y (a few context values,
    many ties) use :func:`kraskov_mi_discrete`.

    :param x: ``(N,)`` or ``(N, d_x)`` samples (z).
    :param y: ``(N,)`` or ``(N, d_y)`` samples (the true context).
    :param k: neighbours (the paper's 3).
    :param metric: ``"chebyshev"`` (max-norm, Kraskov's original; default) or ``"euclidean"`` (L2 with the
        unit-ball volume term; consistent, but biased low at small N: about -0.03 nats at N = 2000 for a 1-d Gaussian
        pair with rho = 0.6, measured).
    :param standardize: scale every column to unit variance first (Kraskov's recommendation; MI is invariant to it).
    :param noise: relative jitter added to break ties (many samples share a context value), as scikit-learn does.
    :param seed: seed of the jitter.
    """
    require("scipy", "analysis")  # a clear error without sb3-dmash[analysis]
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    x, y = _as_2d(x), _as_2d(y)
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples and y has {len(y)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or k >= n:
        raise ValueError(f"k={k!r} must be an integer in [1, n_samples - 1] (n_samples = {n})")
    if metric not in ("euclidean", "chebyshev"):
        raise ValueError(f"metric={metric!r} is not allowed; expected 'euclidean' or 'chebyshev'")
    p = 2.0 if metric == "euclidean" else np.inf
    rng = np.random.default_rng(seed)

    def prepare(a: np.ndarray) -> np.ndarray:
        if standardize:
            std = a.std(axis=0)
            a = a / np.where(std > 0, std, 1.0)
        if noise:
            a = a + noise * np.maximum(1.0, np.abs(a).mean(axis=0)) * rng.standard_normal(a.shape)
        return a

    x, y = prepare(x), prepare(y)
    joint = np.hstack([x, y])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=p)
    radius = np.nextafter(dist[:, -1], 0)  # strictly closer than the k-th neighbour
    n_x = cKDTree(x).query_ball_point(x, radius, p=p, return_length=True) - 1
    n_y = cKDTree(y).query_ball_point(y, radius, p=p, return_length=True) - 1
    mi = digamma(k) + digamma(n) - np.mean(digamma(n_x + 1) + digamma(n_y + 1))
    if metric == "euclidean":
        dx, dy = x.shape[1], y.shape[1]
        mi += _log_unit_ball(dx) + _log_unit_ball(dy) - _log_unit_ball(dx + dy)
    return float(mi)


def kraskov_mi_discrete(
    x: np.ndarray, labels: np.ndarray, k: int = 3, metric: str = "euclidean", standardize: bool = True
) -> float:
    """I(X; C) in nats for continuous ``x`` and a discrete ``labels`` (the k-NN estimator of Ross 2014, KSG's
    construction for one discrete variable; scikit-learn's ``mutual_info_classif`` uses it).

    For each sample, d_i is the distance to its k-th neighbour among the samples of the same label (k is lowered to
    ``N_c - 1`` for a label with fewer samples; labels with one sample are dropped) and m_i counts all samples strictly
    closer than d_i (itself included): ``I = psi(N) - <psi(N_c)> + psi(k) - <psi(m_i)>``.

    Use it for I(z; c) when c takes a few values (the true context is constant per sub-env), where the continuous
    estimator's volume terms and tie handling do not apply.
    """
    require("scipy", "analysis")  # a clear error without sb3-dmash[analysis]
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    x = _as_2d(x)
    labels = np.asarray(labels)
    if labels.ndim > 1:
        labels = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True)[1].reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"x has {len(x)} samples and labels has {len(labels)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} must be an integer >= 1")
    if metric not in ("euclidean", "chebyshev"):
        raise ValueError(f"metric={metric!r} is not allowed; expected 'euclidean' or 'chebyshev'")
    p = 2.0 if metric == "euclidean" else np.inf
    if standardize:
        std = x.std(axis=0)
        x = x / np.where(std > 0, std, 1.0)
    radius = np.zeros(len(x))
    k_used = np.zeros(len(x))
    count = np.zeros(len(x))
    for label in np.unique(labels):
        mask = labels == label
        n_label = int(mask.sum())
        if n_label > 1:
            k_label = min(k, n_label - 1)
            dist, _ = cKDTree(x[mask]).query(x[mask], k=k_label + 1, p=p)
            radius[mask] = np.nextafter(dist[:, -1], 0)
            k_used[mask] = k_label
        count[mask] = n_label
    keep = count > 1
    if keep.sum() < 2:
        raise ValueError("the estimator needs at least one label with two samples")
    x, radius, k_used, count = x[keep], radius[keep], k_used[keep], count[keep]
    m = cKDTree(x).query_ball_point(x, radius, p=p, return_length=True)
    n = len(x)
    return float(digamma(n) - np.mean(digamma(count)) + np.mean(digamma(k_used)) - np.mean(digamma(np.maximum(m, 1))))


def variability(z: np.ndarray) -> float:
    """tr(Cov z) / d_z over all samples."""
    z = _as_2d(z)
    if len(z) < 2:
        raise ValueError("variability needs at least two samples")
    return float(np.trace(np.atleast_2d(np.cov(z, rowvar=False))) / z.shape[1])


def within_context_variability(z: np.ndarray, labels: np.ndarray) -> float:
    """The mean over contexts of tr(Cov z | context) / d_z (how much z moves while the context stays put)."""
    z, labels = _as_2d(z), np.asarray(labels)
    values = [variability(z[labels == label]) for label in np.unique(labels) if np.sum(labels == label) > 1]
    if not values:
        raise ValueError("within-context variability needs a context with at least two samples")
    return float(np.mean(values))


def context_means(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-context mean embeddings ``(n_contexts, d_z)`` and the sorted context labels."""
    z, labels = _as_2d(z), np.asarray(labels)
    unique = np.unique(labels)
    return np.stack([z[labels == label].mean(axis=0) for label in unique]), unique


def cosine_matrix(means: np.ndarray) -> np.ndarray:
    """Cosine similarity between every pair of rows (0 for an all-zero row)."""
    means = _as_2d(means)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    unit = means / np.where(norms > 0, norms, 1.0)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def representation_overlap(means: np.ndarray) -> float:
    """Mean pairwise cosine similarity of the per-context mean embeddings (pairs i < j)."""
    matrix = cosine_matrix(means)
    if len(matrix) < 2:
        raise ValueError("representation overlap needs at least two contexts")
    return float(matrix[np.triu_indices(len(matrix), k=1)].mean())


def cosine_color_range(matrix: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    """The colour range of a cosine heat map: the data's min and max (diagonal included) widened by ``margin`` of the
    range (at least 0.005 each side), clipped to [-1, 1].

    SimNorm cosines lie in [0, 1] and often within a few hundredths of each other: on a fixed [-1, 1] scale 0.98 and
    1.00 get the same colour.
    """
    values = np.asarray(matrix, dtype=np.float64)
    lo, hi = float(values.min()), float(values.max())
    pad = max(margin * (hi - lo), 0.005)
    return max(-1.0, lo - pad), min(1.0, hi + pad)


def _figure(width: float, height: float) -> Any:
    require("matplotlib", "analysis")  # a clear error without sb3-dmash[analysis]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def cosine_figure(matrix: np.ndarray, labels: Sequence[str], title: str = "") -> Any:
    """The cosine-similarity matrix as an annotated heat map coloured on the data's range (:func:`cosine_color_range`).

    :return: the matplotlib ``Figure`` (Agg canvas; no pyplot state).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(matrix)
    size = max(4.0, 0.55 * n + 2.5)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    vmin, vmax = cosine_color_range(matrix)
    image = ax.imshow(matrix, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize="small")
    ax.set_yticklabels(labels, fontsize="small")
    if n <= 24:
        for i in range(n):
            for j in range(n):
                dark = image.norm(matrix[i, j]) < 0.6  # viridis is dark at the low end
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if dark else "black",
                    fontsize=6 if n > 8 else 8,
                )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"cosine similarity (colours span {vmin:.3f} to {vmax:.3f})")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_cosine_matrix(matrix: np.ndarray, labels: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Save :func:`cosine_figure` as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cosine_figure(matrix, labels, title).savefig(path)
    return path


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The samples on their two principal axes (numpy SVD of the centred data).

    :return: ``(N, 2)`` coordinates and the fraction of the total variance each axis explains (``(2,)``); an axis
        that does not exist (``d_z = 1``, or no variance) is zeros.
    """
    z = _as_2d(z)
    centred = z - z.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = np.zeros((len(z), 2))
    ratio = np.zeros(2)
    m = min(2, vt.shape[0])
    coords[:, :m] = centred @ vt[:m].T
    total = float(np.sum(singular**2))
    if total > 0:
        ratio[:m] = singular[:m] ** 2 / total
    return coords, ratio


def _modes(contexts: np.ndarray, keys: Sequence[str]) -> np.ndarray | None:
    """Per context: True where ``action_factor`` < 0 (inverted); ``None`` without an ``action_factor``."""
    keys = list(keys)
    if "action_factor" not in keys:
        return None
    return np.asarray(contexts, dtype=np.float64)[:, keys.index("action_factor")] < 0


def plot_projection(
    z: np.ndarray,
    context_index: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    modes: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """The embeddings on their two principal axes (:func:`pca_2d`), one colour per context, the context means as
    large markers; with ``modes`` (True = inverted) nominal contexts are blue circles and inverted ones red triangles.

    :param z: ``(N, d_z)`` embeddings.
    :param context_index: ``(N,)`` the context of each sample; its sorted unique values match ``labels``.
    :param labels: one label per context.
    :param path: the PNG.
    :param modes: one bool per context (True = inverted action), or ``None``.
    :param title: the axes title.
    """
    require("matplotlib", "analysis")  # a clear error without sb3-dmash[analysis]
    from matplotlib import colormaps

    coords, ratio = pca_2d(z)
    index = np.asarray(context_index)
    unique = np.unique(index)
    n = len(unique)
    if modes is None:
        cmap = colormaps["tab20" if n > 10 else "tab10"]
        colours = [cmap(i % cmap.N) for i in range(n)]
        markers = ["o"] * n
    else:
        colours, markers = [], []
        counts = {False: 0, True: 0}
        totals = {False: int(np.sum(~modes)), True: int(np.sum(modes))}
        for inverted in modes:  # shades of one family per mode, light to dark
            family = colormaps["Reds" if inverted else "Blues"]
            colours.append(family(0.45 + 0.5 * counts[bool(inverted)] / max(1, totals[bool(inverted)] - 1)))
            counts[bool(inverted)] += 1
            markers.append("^" if inverted else "o")
    fig = _figure(7.5, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, label in enumerate(unique):
        points = coords[index == label]
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.35, color=colours[i], marker=markers[i], linewidths=0)
        centre = points.mean(axis=0)
        ax.scatter(centre[0], centre[1], s=70, color=colours[i], marker=markers[i], edgecolors="black", label=str(labels[i]))
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f} % of the variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f} % of the variance)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=2 if n > 12 else 1)
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def entropy_of(labels: np.ndarray) -> float:
    """The plug-in entropy in nats of a discrete variable (rows of a 2-D array are values): the most I(z; c) can be."""
    labels = np.asarray(labels)
    if labels.ndim > 1:
        labels = np.unique(labels.reshape(len(labels), -1), axis=0, return_inverse=True)[1].reshape(-1)
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def _pair_range(matrix: np.ndarray, mask: np.ndarray) -> tuple[float, float] | None:
    values = matrix[np.triu(mask, k=1)]
    return None if values.size == 0 else (float(values.min()), float(values.max()))


def _format_context(context: Sequence[float], keys: Sequence[str]) -> str:
    short = {"action_factor": "a", "mass": "m", "swap": "q", "friction": "f", "gravity": "g", "length": "l"}
    return ", ".join(
        f"{short.get(k, k)}={v:+g}" if k in ("action_factor",) else f"{short.get(k, k)}={v:g}"
        for k, v in zip(keys, context, strict=True)
    )


@dataclasses.dataclass
class DiagnosticsResult:
    """The embedding diagnostics of one model on one set of contexts (see :func:`diagnose`)."""

    env_id: str
    split: str
    n_samples: int
    context_keys: list[str]
    mutual_information: float
    mutual_information_per_key: dict[str, float]
    variability: float
    within_context_variability: float
    representation_overlap: float
    cosine_matrix: np.ndarray
    labels: list[str]
    contexts: np.ndarray
    k: int
    figure: Path | None = None
    mutual_information_max: float | None = None
    mutual_information_max_per_key: dict[str, float] = dataclasses.field(default_factory=dict)
    projection: Path | None = None

    def cosine_ranges(self) -> dict[str, tuple[float, float] | None]:
        """(min, max) cosine between distinct contexts: ``"between_contexts"`` (all pairs) and, when the contexts have
        an ``action_factor``, ``"within_modes"`` (pairs of the same sign) and ``"between_modes"`` (opposite signs)."""
        matrix = np.asarray(self.cosine_matrix, dtype=np.float64)
        n = len(matrix)
        out: dict[str, tuple[float, float] | None] = {"between_contexts": _pair_range(matrix, np.ones((n, n), bool))}
        modes = _modes(self.contexts, self.context_keys)
        if modes is not None:
            same = modes[:, None] == modes[None, :]
            out["within_modes"] = _pair_range(matrix, same)
            out["between_modes"] = _pair_range(matrix, ~same)
        return out

    def format(self) -> str:
        """A few lines for people: the samples, I(z; c) per variable against its maximum, variability, overlap and
        the cosine ranges."""

        def mi(value: float, most: float | None) -> str:
            return f"{value:.2f}" + ("" if most is None else f" of max {most:.2f}")

        per_key = ", ".join(
            f"{key} {mi(value, self.mutual_information_max_per_key.get(key))}"
            for key, value in self.mutual_information_per_key.items()
        )
        lines = [
            f"{self.env_id} {self.split}: {self.n_samples} samples of z from {len(self.labels)} contexts (k = {self.k})",
            f"I(z; c) in nats: context {mi(self.mutual_information, self.mutual_information_max)}; {per_key}",
            f"variability tr(Cov z)/d: {self.variability:.4g} overall, {self.within_context_variability:.4g} within a context",
            f"representation overlap (mean cosine of context means): {self.representation_overlap:.3f}",
        ]
        names = {"between_contexts": "all pairs", "within_modes": "within a mode", "between_modes": "between modes"}
        ranges = [f"{names[key]} [{pair[0]:.3f}, {pair[1]:.3f}]" for key, pair in self.cosine_ranges().items() if pair]
        if ranges:
            lines.append("cosine of context means: " + ", ".join(ranges))
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable: every number, the labels and the cosine matrix."""
        return {
            "env_id": self.env_id,
            "split": self.split,
            "n_samples": self.n_samples,
            "k": self.k,
            "context_keys": self.context_keys,
            "mutual_information": self.mutual_information,
            "mutual_information_per_key": self.mutual_information_per_key,
            "variability": self.variability,
            "within_context_variability": self.within_context_variability,
            "representation_overlap": self.representation_overlap,
            "labels": self.labels,
            "contexts": self.contexts.tolist(),
            "cosine_matrix": np.round(self.cosine_matrix, 6).tolist(),
            "figure": None if self.figure is None else str(self.figure),
            "mutual_information_max": self.mutual_information_max,
            "mutual_information_max_per_key": self.mutual_information_max_per_key,
            "cosine_ranges": {k: None if v is None else list(v) for k, v in self.cosine_ranges().items()},
            "projection": None if self.projection is None else str(self.projection),
        }


def embedding_diagnostics(data: Mapping[str, np.ndarray], k: int = 3, env_id: str = "", split: str = "") -> DiagnosticsResult:
    """The diagnostics of the output of :func:`collect_embeddings` (or any dict with ``z``, ``context``,
    ``context_keys`` and ``context_index``).

    Informativeness is I(z; c) with c the context (one value per sub-env, hence discrete:
    :func:`kraskov_mi_discrete`, L2, k neighbours), overall and per context variable; its maximum is the entropy of
    c over the samples (:func:`entropy_of`).
    """
    z, context = _as_2d(data["z"]), _as_2d(data["context"])
    keys = [str(k_) for k_ in data["context_keys"]]
    labels = np.asarray(data["context_index"])
    means, unique = context_means(z, labels)
    per_context = np.stack([context[labels == label][0] for label in unique])
    return DiagnosticsResult(
        env_id=env_id,
        split=split,
        n_samples=len(z),
        context_keys=keys,
        mutual_information=kraskov_mi_discrete(z, labels, k=k),
        mutual_information_per_key={key: kraskov_mi_discrete(z, context[:, j], k=k) for j, key in enumerate(keys)},
        variability=variability(z),
        within_context_variability=within_context_variability(z, labels),
        representation_overlap=representation_overlap(means),
        cosine_matrix=cosine_matrix(means),
        labels=[_format_context(c, keys) for c in per_context],
        contexts=per_context,
        k=k,
        mutual_information_max=entropy_of(labels),
        mutual_information_max_per_key={key: entropy_of(context[:, j]) for j, key in enumerate(keys)},
    )


def diagnose(
    model: Any,
    env_id: str,
    split: str = "handcrafted_train",
    n_episodes: int = 2,
    steps_per_episode: int | None = None,
    seed: int = 0,
    k: int = 3,
    env_kwargs: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
) -> DiagnosticsResult:
    """Roll ``model`` out on ``split`` and compute informativeness, variability, overlap and the cosine matrix.

    With ``out``, writes ``diagnostics.json``, ``cosine.png`` and ``projection.png`` (the paper's Figure 4 for DI
    ``handcrafted_train``).

    :raises ValueError: ``n_episodes``, ``k`` below 1, ``steps_per_episode`` not ``None`` and below 1 (the message names
        the parameter, its value and what is allowed).
    """
    check_rollout_args(n_episodes=n_episodes, steps_per_episode=steps_per_episode, k=k)
    data = collect_embeddings(
        model, env_id, split, n_episodes=n_episodes, steps_per_episode=steps_per_episode, seed=seed, env_kwargs=env_kwargs
    )
    result = embedding_diagnostics(data, k=k, env_id=env_id, split=split)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        name = getattr(model, "method", type(model).__name__)
        result.figure = plot_cosine_matrix(
            result.cosine_matrix, result.labels, out / "cosine.png", title=f"{env_id} {split} ({name}): cosine of mean z"
        )
        result.projection = plot_projection(
            data["z"],
            data["context_index"],
            result.labels,
            out / "projection.png",
            modes=_modes(result.contexts, result.context_keys),
            title=f"{env_id} {split} ({name}): z on its two principal axes",
        )
        (out / "diagnostics.json").write_text(json.dumps(result.summary(), indent=1) + "\n", encoding="utf-8")
    return result


def load_model(path: str | os.PathLike, device: str = "cpu") -> Any:
    """Load a ``DMASHSAC`` model saved with ``model.save``."""
    from sb3_dmash.dmash.dmash_sac import DMASHSAC

    if not Path(path).exists() and not Path(f"{path}.zip").exists():
        raise FileNotFoundError(f"no model at {path}")
    return DMASHSAC.load(path, device=device)

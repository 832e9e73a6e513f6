"""The seed example: scikit-activeml's BatchBALD gallery page, computed by batchbald_fast.

A bagged GaussianProcessClassifier on 2-D blobs, 5 active-learning cycles of 4 queries.
Each cycle's picture has one panel per pick of the batch: the information a label at each
spot of the plane would add to the batch given the picks before it, with the labelled
points, the picks and the ensemble's decision boundary. With scikit-activeml installed the
example runs exactly as on the gallery page with only the BatchBALD import changed, and once
more with scikit-activeml's own BatchBALD to check the picks and time both; without it, a
plain scikit-learn ensemble of Gaussian processes stands in for scikit-activeml's wrappers.
"""

import importlib.util
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import SaturationWarning

CENTERS = [[0, 1], [-3, 0.5], [-1, -1], [2, 1], [1, -0.5]]
GIF_NAME = "batchbald_demo.gif"
PNG_NAME = "batchbald_demo.png"
# Points per side of the grid the picture's fields are computed on: fine enough that the
# field looks smooth at the PNG's 100 dpi.
GRID_SIZE = 150
PANELS = 4
ORDINALS = ["1st pick", "2nd pick, given the 1st", "3rd pick, given the first two",
            "4th pick, given the first three"]
CLASS_COLOURS = ["#2166ac", "#d6604d"]  # class 0 blue, class 1 red


@dataclass
class Cycle:
    """One active-learning cycle: what was picked, how long picking took, and the ensemble's
    probabilities as they were in this cycle (computed right after the query, so that the
    picture of every cycle shows that cycle's ensemble)."""

    query_indices: np.ndarray
    utilities_B_N: np.ndarray
    seconds: float
    labelled_N: np.ndarray
    probs_N_K_C: np.ndarray  # every member's probabilities of every data point
    probs_G_K_C: np.ndarray | None = None  # ... of the picture's grid points, when asked


def installed(module):
    """Whether an optional dependency can be imported."""
    return importlib.util.find_spec(module) is not None


def make_data():
    """The gallery's blobs: 200 points, 5 centres, labels ``y % 2``."""
    from sklearn.datasets import make_blobs

    random_state = np.random.RandomState(0)
    X, y_true = make_blobs(n_samples=200, n_features=2, centers=CENTERS, cluster_std=0.7,
                           random_state=random_state)
    return X, y_true % 2, random_state


def make_grid(X, size=GRID_SIZE):
    """The picture's grid over the data's bounding box (plus a margin): ``gx, gy`` of shape
    (size, size) and the same points as ``grid_G_2``."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    margin = 0.04 * (hi - lo)
    gx, gy = np.meshgrid(np.linspace(lo[0] - margin[0], hi[0] + margin[0], size),
                         np.linspace(lo[1] - margin[1], hi[1] + margin[1], size))
    return gx, gy, np.column_stack([gx.ravel(), gy.ravel()])


def skactiveml_cycles(strategy_class, n_cycles, batch_size, grid_G_2=None):
    """The gallery page's loop with ``strategy_class`` as its BatchBALD; yields Cycles
    (with the members' probabilities of ``grid_G_2`` when given)."""
    from sklearn.ensemble import BaggingClassifier
    from sklearn.gaussian_process import GaussianProcessClassifier
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool._query_by_committee import _check_ensemble
    from skactiveml.utils import MISSING_LABEL, is_labeled

    X, y_true, random_state = make_data()
    points = X if grid_G_2 is None else np.vstack([X, grid_G_2])
    y = np.full(y_true.shape, MISSING_LABEL)
    # One RandomState shared by everything, as on the gallery page.
    clf = SklearnClassifier(
        BaggingClassifier(SklearnClassifier(GaussianProcessClassifier(),
                                            random_state=random_state),
                          random_state=random_state),
        classes=np.unique(y_true), random_state=random_state)
    qs = strategy_class(random_state=random_state)
    for _ in range(n_cycles):
        labelled_N = is_labeled(y)
        with warnings.catch_warnings():  # members fitted on one class fall back to priors
            warnings.simplefilter("ignore", UserWarning)
            clf.fit(X, y)
            start = time.perf_counter()
            query_indices, utilities = qs.query(X=X, y=y, ensemble=clf,
                                                batch_size=batch_size, return_utilities=True)
            seconds = time.perf_counter() - start
            # The committee's probabilities as the query computes them, taken now: the
            # next cycle refits the same ensemble.
            _, members, *_ = _check_ensemble(
                ensemble=clf, estimator_types=[SkactivemlClassifier], X=X, y=y,
                sample_weight=None, fit_ensemble=False)
            probs_P_K_C = qs._aggregate_predict_probas(points, clf, members).transpose(1, 0, 2)
        yield Cycle(query_indices, utilities, seconds, labelled_N, probs_P_K_C[:len(X)],
                    None if grid_G_2 is None else probs_P_K_C[len(X):])
        y[query_indices] = y_true[query_indices]


def sklearn_cycles(n_cycles, batch_size, grid_G_2=None):
    """The same loop with plain scikit-learn: bootstrapped Gaussian processes as members."""
    from sklearn.dummy import DummyClassifier
    from sklearn.gaussian_process import GaussianProcessClassifier

    from ._api import batchbald
    from .sklearn import ensemble_probas

    X, y_true, random_state = make_data()
    points = X if grid_G_2 is None else np.vstack([X, grid_G_2])
    labelled_N = np.zeros(len(X), dtype=bool)
    for _ in range(n_cycles):
        start = time.perf_counter()
        labelled = np.flatnonzero(labelled_N)
        members = []
        for _ in range(10 if len(labelled) else 0):
            boot = random_state.choice(labelled, len(labelled))
            # A bootstrap of one class cannot fit a GP: that member predicts its prior.
            if len(np.unique(y_true[boot])) > 1:
                member = GaussianProcessClassifier(random_state=random_state)
            else:
                member = DummyClassifier(strategy="prior")
            members.append(member.fit(X[boot], y_true[boot]))

        def predict_probs(X_P):
            # Nothing labelled yet: every class equally likely.
            probs_P_K_C = np.full((len(X_P), max(1, len(members)), 2), 0.5)
            if members:
                seen = np.unique(np.concatenate([m.classes_ for m in members]))
                probs_P_K_C[:] = 0
                probs_P_K_C[:, :, seen] = ensemble_probas(members, X_P)
            return probs_P_K_C

        pool_N = np.flatnonzero(~labelled_N)
        with warnings.catch_warnings():
            if not members:  # the uninformed first cycle: run() says so in its log
                warnings.simplefilter("ignore", SaturationWarning)
            result = batchbald(predict_probs(X[pool_N]), batch_size, num_samples=10,
                               random_state=random_state, return_utilities=True)
        seconds = time.perf_counter() - start
        utilities = np.full((batch_size, len(X)), np.nan)
        utilities[:, pool_N] = result.utilities
        query_indices = pool_N[result.indices]
        probs_P_K_C = predict_probs(points)
        yield Cycle(query_indices, utilities, seconds, labelled_N.copy(),
                    probs_P_K_C[:len(X)],
                    None if grid_G_2 is None else probs_P_K_C[len(X):])
        labelled_N[query_indices] = True


def information_gain(probs_A_K_C, probs_G_K_C):
    """What a label at each point would add to the batch A: ``a(A ∪ {g}) − a(A)``, in nats.

    BatchBALD's utility of g, less ``a(A)``, which every candidate shares. Exact: given
    the parameters the labels are independent, so the joint label ``(y_A, y_g)`` is one
    categorical variable with ``C^|A| · C`` values and ``a(A ∪ {g})`` is its BALD score.

    Parameters
    ----------
    probs_A_K_C : ndarray of shape (|A|, K, C)
        The members' probabilities of the batch's points, in any order.
    probs_G_K_C : ndarray of shape (G, K, C)
        The members' probabilities of the points to score.

    Returns
    -------
    gain_G : ndarray of shape (G,), float64
    """
    from ._api import bald

    G, K, C = probs_G_K_C.shape
    joint_K_M = np.ones((K, 1))  # p(y_A = m | ω_k) over the configurations m
    for probs_K_C in probs_A_K_C:
        joint_K_M = (joint_K_M[:, :, None] * probs_K_C[:, None, :]).reshape(K, -1)
    joint_G_K_MC = (joint_K_M[None, :, :, None] * probs_G_K_C[:, :, None, :]).reshape(G, K, -1)
    return bald(joint_G_K_MC) - bald(joint_K_M[None])[0]


def _best_seconds(fn, repeat=5):
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def draw_cycle(fig, X, y_true, cycle, number, n_cycles, grid):
    """One cycle's picture: a panel per pick, each the information a label at every spot
    would add to the batch given the picks before it, on one colour scale."""
    from matplotlib.lines import Line2D

    gx, gy, _ = grid
    picks = cycle.query_indices
    fig.clear()
    axes = fig.subplots(2, 2, sharex=True, sharey=True)
    gains = [information_gain(cycle.probs_N_K_C[picks[:i]], cycle.probs_G_K_C)
             for i in range(PANELS)]
    top = max(gain_G.max() for gain_G in gains)
    informative = top > 1e-9
    # With nothing to show, the scale runs to the most one label can say: log C nats.
    vmax = top if informative else np.log(cycle.probs_N_K_C.shape[2])
    mean_class1 = cycle.probs_G_K_C[:, :, 1].mean(axis=1).reshape(gx.shape)
    crosses = mean_class1.min() < 0.5 < mean_class1.max()
    extent = (gx[0, 0], gx[0, -1], gy[0, 0], gy[-1, 0])
    colours = np.array(CLASS_COLOURS)[y_true]
    labelled = cycle.labelled_N
    for i, ax in enumerate(axes.flat):
        image = ax.imshow(gains[i].reshape(gx.shape), origin="lower", extent=extent,
                          aspect="auto", cmap="Greens", vmin=0, vmax=vmax,
                          interpolation="bilinear")
        if crosses:
            ax.contour(gx, gy, mean_class1, [0.5], colors="black", linewidths=1.5)
        ax.scatter(*X[~labelled].T, c=colours[~labelled], s=16, edgecolors="white",
                   linewidths=0.4, zorder=2)
        ax.scatter(*X[labelled].T, c=colours[labelled], s=70, edgecolors="black",
                   linewidths=1.5, zorder=3)
        ax.scatter(*X[picks[:i]].T, marker="*", s=170, c="white", edgecolors="black",
                   linewidths=1, zorder=4)
        ax.scatter(*X[picks[i]], marker="*", s=400, c="gold", edgecolors="black",
                   linewidths=1.2, zorder=5)
        if not informative:
            ax.text(0.5, 0.5, "0 nats everywhere", transform=ax.transAxes, ha="center",
                    va="center", fontsize=11, bbox=dict(facecolor="white", alpha=0.85))
        ax.set_title(f"Cycle {number} — {ORDINALS[i]}", fontsize=11)
    for ax in axes[1]:
        ax.set_xlabel("feature 1")
    for ax in axes[:, 0]:
        ax.set_ylabel("feature 2")
    fig.colorbar(image, ax=axes, shrink=0.85, pad=0.02,
                 label="information a label there would add to the batch (nats)")
    if informative:
        fig.suptitle(f"BatchBALD, cycle {number} of {n_cycles}: {labelled.sum()} points "
                     f"labelled, {len(picks)} more chosen together", fontsize=13)
    else:
        fig.suptitle(f"BatchBALD, cycle {number} of {n_cycles}: nothing labelled yet, "
                     "every member predicts 50 : 50,\nso no label is informative and the "
                     f"{len(picks)} picks are ties", fontsize=12)
    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color=CLASS_COLOURS[0], label="class 0"),
        Line2D([], [], ls="", marker="o", ms=5, color=CLASS_COLOURS[1], label="class 1"),
        Line2D([], [], ls="", marker="o", ms=8, mfc="lightgrey", mec="black", mew=1.5,
               label="labelled (ring; fill: its class)"),
        Line2D([], [], ls="", marker="*", ms=17, mfc="gold", mec="black",
               label="this panel's pick"),
        Line2D([], [], ls="", marker="*", ms=12, mfc="white", mec="black",
               label="picked earlier in this batch"),
        Line2D([], [], color="black" if crosses else "none", lw=1.5,
               label="decision boundary (members' mean p = ½)" if crosses else
               f"no decision boundary: class {int(mean_class1.mean() > 0.5)} everywhere"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False,
               fontsize=10)


def _render(fig, dpi):
    """The figure in 256 colours, octree-quantised: a fifth of the full-colour PNG's size,
    and unlike Pillow's default palette (which spends its colours on the field's greens)
    it keeps the small gold stars gold."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)


def run(out_dir="batchbald_fast_demo", n_cycles=5, batch_size=4, log=print):
    """Run the seed example, write the GIF and PNG, report picks and timings.

    Parameters
    ----------
    out_dir : str or path, default="batchbald_fast_demo"
        Directory for ``batchbald_demo.gif`` and ``batchbald_demo.png`` (created).
    n_cycles : int, default=5
    batch_size : int, default=4
        Queries per cycle (the figure shows the first 4 picks).
    log : callable, default=print
        Receives each line of the report.

    Returns
    -------
    report : dict
        ``png``, ``gif``, ``picks`` (list per cycle),
        ``seconds`` (per cycle) and, with scikit-activeml, ``skactiveml_picks``,
        ``skactiveml_seconds``, ``same_picks``, ``max_utility_difference``,
        ``batchbald_seconds`` and ``skactiveml_batchbald_seconds``.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError('the demo needs matplotlib: pip install "batchbald_fast[demo]"') \
            from exc
    if batch_size < PANELS:
        raise ValueError(f"the demo draws {PANELS} picks per cycle: batch_size must be "
                         f"≥ {PANELS}, got {batch_size}")
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, PNG_NAME)
    gif = os.path.join(out_dir, GIF_NAME)
    have_skactiveml = installed("skactiveml")
    X, y_true, _ = make_data()
    grid = make_grid(X)

    if have_skactiveml:
        from skactiveml.pool import BatchBALD as ReferenceBatchBALD
        from skactiveml.pool import batch_bald as reference_batch_bald

        from .skactiveml import BatchBALD, batch_bald

        ours = skactiveml_cycles(BatchBALD, n_cycles, batch_size, grid[2])
        # Theirs with the same grid predictions after each query: like surroundings.
        theirs = skactiveml_cycles(ReferenceBatchBALD, n_cycles, batch_size, grid[2])
        log("scikit-activeml's gallery example, BatchBALD from batchbald_fast.skactiveml")
    else:
        ours = sklearn_cycles(n_cycles, batch_size, grid[2])
        log("scikit-activeml not installed: a plain scikit-learn ensemble, no comparison")

    # All computing first, drawing last: matplotlib running in between slows down
    # whatever runs next, and the timings would show it. The two loops take turns, cycle by
    # cycle, so that each query follows the other library's: the same order for both.
    cycles, reference = [], []
    for number, cycle in enumerate(ours, start=1):
        cycles.append(cycle)
        log(f"cycle {number}: picks {cycle.query_indices.tolist()}, "
            f"acquisition {cycle.seconds * 1e3:.1f} ms"
            + (" (nothing labelled yet: the members predict alike, every gain is 0 and "
               "the picks are tie-breaks)" if not cycle.labelled_N.any() else ""))
        if have_skactiveml:
            reference.append(next(theirs))
    report = {"png": png, "gif": gif, "picks": [c.query_indices.tolist() for c in cycles],
              "seconds": [c.seconds for c in cycles]}
    if have_skactiveml:
        same = all(np.array_equal(a.query_indices, b.query_indices)
                   for a, b in zip(cycles, reference))
        difference = max(float(np.nanmax(np.abs(a.utilities_B_N - b.utilities_B_N)))
                         for a, b in zip(cycles, reference))
        # The queries include the ensemble's predictions, the same work on both sides:
        # BatchBALD alone is timed on the probabilities each query scored, best of 5.
        scored = [np.ascontiguousarray(c.probs_N_K_C[~c.labelled_N].transpose(1, 0, 2))
                  for c in cycles]
        with warnings.catch_warnings():  # cycle 1's uninformed model: logged above
            warnings.simplefilter("ignore", SaturationWarning)
            ours_bb = sum(_best_seconds(lambda: batch_bald(p_K_N_C, batch_size))
                          for p_K_N_C in scored)
        theirs_bb = sum(_best_seconds(lambda: reference_batch_bald(p_K_N_C.copy(), batch_size))
                        for p_K_N_C in scored)
        ours_q, theirs_q = sum(report["seconds"]), sum(c.seconds for c in reference)
        report.update(skactiveml_picks=[c.query_indices.tolist() for c in reference],
                      skactiveml_seconds=[c.seconds for c in reference], same_picks=same,
                      max_utility_difference=difference, batchbald_seconds=ours_bb,
                      skactiveml_batchbald_seconds=theirs_bb)
        log(f"scikit-activeml 1.0.1 picks: {report['skactiveml_picks']}")
        log(f"same picks as scikit-activeml: {'yes' if same else 'NO'}; "
            f"utilities differ by at most {difference:.1e}")
        log(f"BatchBALD, all cycles: {ours_bb * 1e3:.2f} ms, scikit-activeml "
            f"{theirs_bb * 1e3:.2f} ms: {theirs_bb / ours_bb:.1f}x faster")
        log(f"whole queries with the ensemble's predictions: {ours_q * 1e3:.0f} ms, "
            f"scikit-activeml {theirs_q * 1e3:.0f} ms")
    fig = Figure(figsize=(10, 8.8), layout="constrained")
    frames = []
    for number, cycle in enumerate(cycles, start=1):
        draw_cycle(fig, X, y_true, cycle, number, len(cycles), grid)
        frames.append(_render(fig, dpi=80))
    _render(fig, dpi=100).save(png, optimize=True)
    # Two seconds a frame: each holds four panels to read.
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=2000, loop=0)
    log(f"wrote {png}")
    log(f"wrote {gif}")
    return report

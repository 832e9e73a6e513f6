"""Joint EPIG of whole batches, estimated independently of the package's estimator.

    PYTHONPATH=. python benchmarks/epig_batch_quality.py [--n 10000] [--targets 500]
        [--batch-size 10] [--draws 20000] [--seed 0]

On a ``make_probs`` pool (K = 20, C = 10) whose targets come from a shifted distribution
(``make_probs(T, K, C, seed=1)``), picks b points by ``batch_epig`` (defaults,
``random_state=seed``), by top-b EPIG (``epig``) and by a power draw on EPIG
(``stochastic_batch``), then estimates each batch's joint EPIG
``(1/T) Σ_t I(y_A; y*_t) = (1/T) Σ_t E_{y_A} KL(p(y*_t | y_A) ‖ p(y*_t))`` by plain Monte
Carlo: ``--draws`` fresh draws of y_A (a member k uniformly, then every label from
``p[a, k, :]``), the members' posterior given y_A from the exact ``log p(y_A | ω_k)``, and
every target's predictive given y_A from it. Prints each estimate with its standard error.
"""

import argparse
import math
import time

import numpy as np
from scipy.special import softmax

from batch_quality import log_joint_draws
from batchbald_fast import batch_epig, epig, stochastic_batch
from batchbald_fast._workloads import make_probs


def joint_epig_estimate(probs_N_K_C, targets_T_K_C, batch, draws, seed):
    """Monte Carlo estimate of the batch's joint EPIG and its standard error."""
    marginal_T_C = targets_T_K_C.mean(axis=1)
    terms = []
    for log_joint_n_K in log_joint_draws(probs_N_K_C[np.asarray(batch)], draws, seed,
                                         chunk=2000):
        posterior_n_K = softmax(log_joint_n_K, axis=1)
        # p(y*_t | y_A) for every target: the members' posterior mixes their predictions.
        given_n_T_C = np.einsum("nk,tkc->ntc", posterior_n_K, targets_T_K_C)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_n_T = np.sum(np.where(given_n_T_C > 0, given_n_T_C * (
                np.log(given_n_T_C) - np.log(marginal_T_C)), 0.0), axis=2)
        terms.append(kl_n_T.mean(axis=1))
    terms = np.concatenate(terms)
    return terms.mean(), terms.std() / math.sqrt(draws)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    K, C, b = 20, 10, args.batch_size
    probs_N_K_C = make_probs(args.n, K, C, seed=0)
    targets_T_K_C = make_probs(args.targets, K, C, seed=1)

    start = time.perf_counter()
    result = batch_epig(probs_N_K_C, targets_T_K_C, b, random_state=args.seed)
    seconds = time.perf_counter() - start
    epig_N = epig(probs_N_K_C, targets_T_K_C)
    top_b = np.argsort(-epig_N, kind="stable")[:b]
    power = stochastic_batch(epig_N, b, mode="power", random_state=args.seed)
    print(f"N={args.n} T={args.targets} K={K} C={C} b={b}; {args.draws} draws")
    print(f"batch_epig default: {seconds:.2f} s, ambiguous {int(result.ambiguous.sum())}, "
          f"last reported score {result.scores[-1]:.4f}")
    for name, batch in [("batch_epig", result.indices), ("top-b EPIG", top_b),
                        ("power EPIG", power)]:
        for size in sorted({max(1, b // 2), b}):
            value, error = joint_epig_estimate(probs_N_K_C, targets_T_K_C, batch[:size],
                                               args.draws, args.seed + 1)
            print(f"  {name:<12} first {size:>4}: joint EPIG = {value:.4f} ± {error:.4f}")


if __name__ == "__main__":
    main()

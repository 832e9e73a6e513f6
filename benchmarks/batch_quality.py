"""Mutual information of a whole batch, estimated independently of the package's estimator.

    PYTHONPATH=. python benchmarks/batch_quality.py W7s [--draws 1000000] [--seed 0]
    PYTHONPATH=/work/main python benchmarks/batch_quality.py W7s   # another checkout

Runs ``batchbald`` with its defaults (``random_state=seed``) on a workload, and top-k BALD,
then estimates ``I(y_A; ω) = H(y_A) − Σ_a E_a`` of each batch: H(y_A) by plain Monte Carlo
over ``--draws`` fresh joint draws (a member k uniformly, then every label from
``p[a, k, :]``) with the exact ``log p(y_A) = logsumexp_k Σ_a log p[a, k, y_a] − log K``.
Prints each estimate with its standard error, next to ln K (the most any batch can reach).
"""

import argparse
import math
import time

import numpy as np
from scipy.special import logsumexp

from batchbald_fast import bald, batchbald
from batchbald_fast._workloads import WORKLOADS


def log_joint_draws(probs_A_K_C, draws, seed, chunk=20000):
    """``log p(y_A | ω_k)`` of fresh joint draws (a member k uniformly, then every label
    from ``p[a, k, :]``), in chunks of shape (n, K)."""
    A, K, C = probs_A_K_C.shape
    with np.errstate(divide="ignore"):
        log_probs_A_K_C = np.log(probs_A_K_C)
    cdf_A_K_C = np.cumsum(probs_A_K_C, axis=2)
    rng = np.random.default_rng(seed)
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        member_n = rng.integers(K, size=n)
        log_joint_n_K = np.zeros((n, K))
        for a in range(A):
            cdf_n_C = cdf_A_K_C[a, member_n]
            labels_n = (cdf_n_C < rng.random(n)[:, None] * cdf_n_C[:, -1:]).sum(axis=1)
            log_joint_n_K += log_probs_A_K_C[a][:, labels_n].T
        yield log_joint_n_K


def batch_mutual_information(probs_N_K_C, batch, draws, seed):
    """Monte Carlo estimate of I(y_A; ω) and its standard error."""
    probs_A_K_C = probs_N_K_C[np.asarray(batch)]
    K = probs_A_K_C.shape[1]
    log_q = np.concatenate([logsumexp(log_joint_n_K, axis=1) - math.log(K)
                            for log_joint_n_K in log_joint_draws(probs_A_K_C, draws, seed)])
    with np.errstate(divide="ignore"):
        log_probs_A_K_C = np.log(probs_A_K_C)
    cond = -np.sum(probs_A_K_C * np.where(probs_A_K_C > 0, log_probs_A_K_C, 0)) / K
    return -log_q.mean() - cond, log_q.std() / math.sqrt(draws)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--draws", type=int, default=10**6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    w = WORKLOADS[args.workload]
    probs_N_K_C = w.probs()

    start = time.perf_counter()
    result = batchbald(probs_N_K_C, w.batch_size, num_samples=w.num_samples,
                       random_state=args.seed)
    seconds = time.perf_counter() - start
    top_k = np.argsort(-bald(probs_N_K_C), kind="stable")[:w.batch_size]
    print(f"{w.name}: N={w.N} K={w.K} C={w.C} b={w.batch_size} M={w.num_samples}; "
          f"ln K = {math.log(w.K):.4f}; {args.draws} draws")
    extra = {name: int(getattr(result, name).sum()) for name in ("ambiguous", "saturated")
             if hasattr(result, name)}
    print(f"batchbald default: {seconds:.2f} s, {extra}, last reported score "
          f"{result.scores[-1]:.4f}")
    for name, batch in [("batchbald default", result.indices), ("top-k BALD", top_k)]:
        for size in sorted({w.batch_size // 4, w.batch_size // 2, w.batch_size}):
            mi, se = batch_mutual_information(probs_N_K_C, batch[:size], args.draws,
                                              args.seed + 1)
            print(f"  {name:<18} first {size:>4}: I(y_A; ω) = {mi:.4f} ± {se:.4f}")


if __name__ == "__main__":
    main()

"""Pick fidelity of sampled steps: is each sampled pick within 1e-3 nats of the exact best?

    PYTHONPATH=. python benchmarks/pick_fidelity.py [--num-samples 200,1000] [--seeds 8] [--classes 3,4]
    PYTHONPATH=/work/main python benchmarks/pick_fidelity.py   # another checkout's default

For C = 3 and C = 4 pools (``make_probs(400, 20, C, seed=100+s, scale=1.5)``, b = 10) it
runs ``batchbald`` with its defaults, and for every sampled step computes the exact utility
of every available candidate given the same prefix, by brute force written here (enumerate
the prefix's C^|A| configurations, form P for every candidate, sum −P log P; nothing of the
package is used). A pick is right when its exact utility is within ``--within`` nats of
the exact best. Prints right/sampled steps and the seconds ``batchbald`` took, per C and
num_samples. Only the public API is used, so it measures any checkout.
"""

import argparse
import time

import numpy as np

from batchbald_fast import batchbald
from batchbald_fast._workloads import make_probs


def _xlogx(p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(p), 0.0)


def exact_utilities(probs_N_K_C, prefix, chunk=8192):
    """``a(A ∪ {x})`` for every x, by enumerating every configuration of the prefix A."""
    N, K, C = probs_N_K_C.shape
    joint_M_K = np.ones((1, K))
    for a in prefix:  # J[(m, c), k] = J[m, k] p[a, k, c]
        joint_M_K = (joint_M_K[:, None, :] * probs_N_K_C[a].T[None]).reshape(-1, K)
    probs_K_NC = probs_N_K_C.transpose(1, 0, 2).reshape(K, N * C) / K
    joint_entropy_N = np.zeros(N)
    for start in range(0, len(joint_M_K), chunk):
        P_m_N_C = (joint_M_K[start:start + chunk] @ probs_K_NC).reshape(-1, N, C)
        joint_entropy_N -= _xlogx(P_m_N_C).sum(axis=(0, 2))
    cond_N = -_xlogx(probs_N_K_C).sum(axis=2).mean(axis=1)
    return joint_entropy_N - cond_N[list(prefix)].sum() - cond_N


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", default="200,1000")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--classes", default="3,4")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--pool", type=int, default=400)
    parser.add_argument("--within", type=float, default=1e-3)
    args = parser.parse_args()

    exact_cache = {}
    print(f"N={args.pool} K=20 b={args.batch_size} scale=1.5, seeds 100..{99 + args.seeds}: "
          f"sampled picks within {args.within:g} nats of the exact best")
    print(f"{'C':>2} {'num_samples':>11} {'right':>9} {'share':>6} {'seconds':>8} "
          f"{'ambiguous':>9}  worst regret")
    for C in map(int, args.classes.split(",")):
        pools = [make_probs(args.pool, 20, C, seed=100 + s, scale=1.5)
                 for s in range(args.seeds)]
        batchbald(pools[0], 2)  # warm-up: thread start-up is not the call's cost
        for num_samples in map(int, args.num_samples.split(",")):
            right = sampled = ambiguous = 0
            seconds, worst = 0.0, 0.0
            for s, probs_N_K_C in enumerate(pools):
                start = time.perf_counter()
                result = batchbald(probs_N_K_C, args.batch_size, num_samples=num_samples,
                                   random_state=s)
                seconds += time.perf_counter() - start
                for t in np.flatnonzero(result.mode == "sampled"):
                    prefix = tuple(int(i) for i in result.indices[:t])
                    key = (C, s, prefix)
                    if key not in exact_cache:
                        exact_cache[key] = exact_utilities(probs_N_K_C, prefix)
                    utility_N = exact_cache[key].copy()
                    utility_N[list(prefix)] = -np.inf
                    regret = utility_N.max() - utility_N[result.indices[t]]
                    worst = max(worst, regret)
                    right += regret <= args.within
                    sampled += 1
                    ambiguous += bool(result.ambiguous[t])
            print(f"{C:>2} {num_samples:>11} {f'{right}/{sampled}':>9} "
                  f"{right / max(sampled, 1):>6.0%} {seconds:>8.3f} {ambiguous:>9}  "
                  f"{worst:.2e}")


if __name__ == "__main__":
    main()

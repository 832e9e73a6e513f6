"""Pick fidelity of sampled steps: is each sampled pick within 1e-3 nats of the exact best?

    PYTHONPATH=. python benchmarks/pick_fidelity.py [--num-samples 200,1000] [--seeds 8] [--classes 3,4]
    PYTHONPATH=/work/main python benchmarks/pick_fidelity.py   # another checkout's default
    PYTHONPATH=. python benchmarks/pick_fidelity.py --variants default,rounds-8

For C = 3 and C = 4 pools (``make_probs(400, 20, C, seed=100+s, scale=1.5)``, b = 10) it
runs ``batchbald`` with its defaults, and for every sampled step computes the exact utility
of every available candidate given the same prefix, by brute force written here (enumerate
the prefix's C^|A| configurations, form P for every candidate, sum −P log P; nothing of the
package is used). A pick is right when its exact utility is within ``--within`` nats of
the exact best. Prints right/sampled steps and the seconds ``batchbald`` took, per C and
num_samples. Only the public API is used, so it measures any checkout; ``--variants``
also runs ``batchbald`` keyword settings (VARIANTS, e.g. ``rounds-8``: ``extra_rounds=8``)
on the same pools in the same loop, so their seconds compare side by side.
"""

import argparse
import time

import numpy as np

from batchbald_fast import batchbald
from batchbald_fast._workloads import make_probs


# Keyword settings of ``batchbald`` measured side by side, by name (``default``: none, so
# any checkout's default).
VARIANTS = {"default": {}, **{f"rounds-{r}": {"extra_rounds": r} for r in (0, 2, 4, 8, 16)}}


def run_variant(name, *args, **kwargs):
    """``batchbald(*args, **kwargs, **VARIANTS[name])``."""
    return batchbald(*args, **kwargs, **VARIANTS[name])


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
    parser.add_argument("--variants", default="default",
                        help=f"comma-separated, of {sorted(VARIANTS)}")
    args = parser.parse_args()

    exact_cache = {}
    print(f"N={args.pool} K=20 b={args.batch_size} scale=1.5, seeds 100..{99 + args.seeds}: "
          f"sampled picks within {args.within:g} nats of the exact best")
    variants = args.variants.split(",")
    print(f"{'variant':>10} {'C':>2} {'num_samples':>11} {'right':>9} {'share':>6} {'seconds':>8} "
          f"{'ambiguous':>9}  worst regret, rows scored")
    for C in map(int, args.classes.split(",")):
        pools = [make_probs(args.pool, 20, C, seed=100 + s, scale=1.5)
                 for s in range(args.seeds)]
        batchbald(pools[0], 2)  # warm-up: thread start-up is not the call's cost
        for num_samples in map(int, args.num_samples.split(",")):
            tally = {v: dict(right=0, sampled=0, ambiguous=0, seconds=0.0, worst=0.0,
                             rows=0) for v in variants}
            for s, probs_N_K_C in enumerate(pools):
                for variant in variants:
                    n = tally[variant]
                    start = time.perf_counter()
                    result = run_variant(variant, probs_N_K_C, args.batch_size,
                                         num_samples=num_samples, random_state=s)
                    n["seconds"] += time.perf_counter() - start
                    n["rows"] += int(getattr(result, "rows_scored", np.zeros(1)).sum())
                    for t in np.flatnonzero(result.mode == "sampled"):
                        prefix = tuple(int(i) for i in result.indices[:t])
                        key = (C, s, prefix)
                        if key not in exact_cache:
                            exact_cache[key] = exact_utilities(probs_N_K_C, prefix)
                        utility_N = exact_cache[key].copy()
                        utility_N[list(prefix)] = -np.inf
                        regret = utility_N.max() - utility_N[result.indices[t]]
                        n["worst"] = max(n["worst"], regret)
                        n["right"] += regret <= args.within
                        n["sampled"] += 1
                        n["ambiguous"] += bool(result.ambiguous[t])
            for variant, n in tally.items():
                right = f"{n['right']}/{n['sampled']}"
                print(f"{variant:>10} {C:>2} {num_samples:>11} {right:>9} "
                      f"{n['right'] / max(n['sampled'], 1):>6.0%} {n['seconds']:>8.3f} "
                      f"{n['ambiguous']:>9}  {n['worst']:.2e}  rows {n['rows']:.3g}",
                      flush=True)


if __name__ == "__main__":
    main()

"""Joint-entropy error of the default mode against plain resampling, at equal budget.

    python benchmarks/sampling_error.py [--num-samples 200] [--seeds 50]

For C = 3 and a batch growing to 8 points the exact H(y_A, y_x) is computable (3^9
configurations). Both modes follow the same batch: the default (pruned while certified
within tol, then incremental sampling with merged draws) and plain resampling of every
label at every step (tol=0, incremental=False). Prints the mean absolute error over seeds
per |A|, and the rows M each mode scored.
"""

import argparse

import numpy as np

from batchbald_fast import _backend, _joint
from batchbald_fast._settings import DEFAULT_TOL, Settings
from batchbald_fast._workloads import make_probs


def joint_entropy(state, probs_N_K_C, x):
    out = np.empty(1)
    _backend.kernels_for().score_candidates(state.joint_M_K, state.weights_M, probs_N_K_C,
                                            np.array([x], dtype=np.intp), out)
    return out[0] + probs_N_K_C[x].sum(axis=1) @ state.offset_K


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--scale", type=float, default=3.0)
    args = parser.parse_args()
    A, K, C = 8, 20, 3
    probs_N_K_C = make_probs(A + 1, K, C, seed=0, scale=args.scale)
    x = A

    exact_state, exact = _joint.empty_joint(K), []
    for a in range(A):
        exact_state = _joint.extend_exact(exact_state, probs_N_K_C[a])
        exact.append(joint_entropy(exact_state, probs_N_K_C, x))

    modes = {"default": {"tol": DEFAULT_TOL, "incremental": True},
             "resample": {"tol": 0.0, "incremental": False}}
    errors = {m: np.zeros((args.seeds, A)) for m in modes}
    rows = {m: np.zeros((args.seeds, A)) for m in modes}
    for mode, options in modes.items():
        settings = Settings(args.num_samples, _backend.kernels_for(), **options)
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            state = _joint.empty_joint(K)
            for a in range(A):
                state = _joint.next_joint(state, probs_N_K_C[:a + 1], settings, rng)
                errors[mode][seed, a] = abs(joint_entropy(state, probs_N_K_C, x) - exact[a])
                rows[mode][seed, a] = state.num_configurations

    print(f"C={C} K={K} num_samples={args.num_samples} seeds={args.seeds} "
          f"scale={args.scale}: mean |error| of H(y_A, y_x) in nats (mean rows M)")
    print(f"{'|A|':>4} {'default':>22} {'resample':>22}")
    for a in range(A):
        cells = [f"{errors[m][:, a].mean():.2e} ({rows[m][:, a].mean():7.0f})" for m in modes]
        print(f"{a + 1:>4} {cells[0]:>22} {cells[1]:>22}")


if __name__ == "__main__":
    main()

"""``epig`` against the EPIG authors' code and baal's ``EPIG``, on random inputs.

    python benchmarks/compare_epig.py --epig-repo /path/to/fbickfordsmith/epig

The authors' repository (github.com/fbickfordsmith/epig) is not a package: give the
directory that holds its ``src/``. Only ``src/uncertainty/epig_probs.py``,
``bald_probs.py`` and ``utils.py`` are imported (its ``src/uncertainty/__init__.py`` pulls
in the whole project's dependencies, so the modules are loaded by path). Compared, each
on every case: ``epig_from_probs`` and ``epig_from_probs_using_matmul`` in float64 and
float32, our standard error against the spread of ``conditional_epig_from_probs`` over
targets, baal 2.1.0's ``EPIG.compute_score`` (float32) when baal is installed, and our
own ``dtype=float32``: every difference is against our float64.
"""

import argparse
import importlib.util
import os
import sys
import types

import numpy as np

from batchbald_fast import epig
from batchbald_fast._workloads import make_probs

CASES = [(50, 20, 8, 3), (40, 30, 20, 10), (30, 7, 5, 2), (20, 15, 100, 10)]  # N, T, K, C


def load_uncertainty(repo):
    """The three modules of ``src/uncertainty`` EPIG needs, without the package's __init__."""
    for name in ("src", "src.uncertainty"):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(repo, *name.split("."))]
        sys.modules[name] = package
    for name in ("utils", "bald_probs", "epig_probs"):
        full = f"src.uncertainty.{name}"
        spec = importlib.util.spec_from_file_location(
            full, os.path.join(repo, "src", "uncertainty", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
    return sys.modules["src.uncertainty.epig_probs"]


def cases(seeds):
    rng = np.random.default_rng(0)
    for seed in range(seeds):
        for N, T, K, C in CASES:
            yield (rng.dirichlet(np.full(C, 0.5), size=(N, K)),
                   rng.dirichlet(np.full(C, 0.5), size=(T, K)))
            yield make_probs(N, K, C, seed=seed), make_probs(T, K, C, seed=seed + 100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epig-repo", required=True, metavar="DIR")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    import torch

    theirs = load_uncertainty(args.epig_repo)
    try:
        from baal.active.heuristics import EPIG
    except ImportError:
        EPIG = None
    worst, checks = {}, 0
    for pool, targets in cases(args.seeds):
        ours, std_error = epig(pool, targets, return_std_error=True)
        found = {}
        for dtype in (torch.float64, torch.float32):
            p, t = torch.tensor(pool, dtype=dtype), torch.tensor(targets, dtype=dtype)
            bits = str(dtype).split(".")[-1]
            found[f"epig_from_probs, {bits}"] = theirs.epig_from_probs(p, t)
            found[f"epig_from_probs_using_matmul, {bits}"] = \
                theirs.epig_from_probs_using_matmul(p, t)
        per_target = theirs.conditional_epig_from_probs(torch.tensor(pool),
                                                        torch.tensor(targets)).numpy()
        spread = per_target.std(axis=1, ddof=1) / np.sqrt(len(targets))
        if EPIG is not None:
            found["baal EPIG, float32"] = EPIG().compute_score(
                np.ascontiguousarray(pool.transpose(0, 2, 1)),
                np.ascontiguousarray(targets.transpose(0, 2, 1)))
        # Our float32 against our float64, beside theirs against it: each float32's error.
        found["batchbald_fast epig(dtype=float32)"] = epig(pool, targets, dtype=np.float32)
        for name, scores in found.items():
            worst[name] = max(worst.get(name, 0.0),
                              float(np.abs(np.asarray(scores, dtype=np.float64) - ours).max()))
        name = "std error vs conditional_epig_from_probs, float64"
        worst[name] = max(worst.get(name, 0.0), float(np.abs(spread - std_error).max()))
        checks += len(found) + 1
    print(f"{checks} comparisons on {2 * len(CASES) * args.seeds} inputs")
    for name, diff in worst.items():
        print(f"  {name:<52} max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()

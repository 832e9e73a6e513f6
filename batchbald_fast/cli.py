"""The ``batchbald-fast`` command: ``select``, ``bench`` and ``demo``."""

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import threading
import time

import numpy as np

from . import __version__, _noise, _result, _search, _stochastic, _validation


_DTYPES = {"float64": np.float64, "float32": np.float32}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not argparse's usage block: the message says what to fix.
        raise _UsageError(f"{message} (see {self.prog} --help)")


class _UsageError(Exception):
    pass


class _Progress:
    """Elapsed time on stderr for runs past a second; only on a terminal, never with --quiet."""

    def __init__(self, label, enabled):
        self.label = label
        self._enabled = enabled and sys.stderr.isatty()
        self._done = threading.Event()
        self._shown = False

    def __enter__(self):
        if self._enabled:
            self._start = time.perf_counter()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._done.wait(0.5):
            elapsed = time.perf_counter() - self._start
            if elapsed > 1:
                self._shown = True
                sys.stderr.write(f"\r{self.label} {elapsed:.0f} s ")
                sys.stderr.flush()

    def __exit__(self, *exc):
        if self._enabled:
            self._done.set()
            self._thread.join()
            if self._shown:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()


class _StepLine:
    """``progress(done, total)`` for ``batchbald`` when tqdm is not installed: one line of
    picks done, time taken and time left on stderr, ended by a newline when it closes."""

    def __init__(self, label):
        self.label = label
        self._start = time.perf_counter()
        self._written = -np.inf

    def __enter__(self):
        return self

    def __call__(self, done, total):
        now = time.perf_counter()
        if now - self._written < 0.2 and done < total:  # a terminal needs no more
            return
        self._written = now
        elapsed = now - self._start
        left = elapsed / done * (total - done)
        sys.stderr.write(f"\r{self.label}: {done}/{total} picks, {_duration(elapsed)}, "
                         f"about {_duration(left)} left\033[K")
        sys.stderr.flush()

    def __exit__(self, *exc):
        if self._written > -np.inf:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _duration(seconds):
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _build_parser():
    parser = _Parser(prog="batchbald-fast",
                     description="Fast, exact-where-possible BatchBALD acquisition.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    select = commands.add_parser("select", help="pick a batch from a .npy, .npz or zarr store "
                                                 "of probabilities")
    select.add_argument("probs", metavar="PROBS",
                        help="array of shape (N, K, C) (see --layout): a .npy file "
                             "(memory-mapped), an .npz archive (see --key) or a zarr store "
                             "(a directory)")
    select.add_argument("--key", metavar="NAME",
                        help="the array to use from an .npz archive (needed when it holds "
                             "more than one)")
    select.add_argument("--batch-size", type=int, required=True)
    select.add_argument("--objective", choices=list(_OBJECTIVES), default="batchbald",
                        help="what the batch maximises: batchbald (greedy, default), "
                             "batch-epig (greedy joint EPIG, needs --targets), or the top "
                             "(or --stochastic draw) of a per-point score: bald, epig "
                             "(needs --targets)")
    select.add_argument("--targets", metavar="TARGETS",
                        help="for --objective epig and batch-epig: the same models' "
                             "predictions on "
                             "target inputs, a .npy or single-array .npz of shape (T, K, C) "
                             "(same --layout and --log-probs as PROBS)")
    select.add_argument("--stochastic", choices=_stochastic.MODES, metavar="MODE",
                        help="draw the batch at random without replacement, each draw ∝ "
                             "the score's power (power), exp(beta·score) (softmax) or "
                             "rank^-beta (softrank), seeded by --seed; with a per-point "
                             "objective (bald, epig)")
    select.add_argument("--beta", type=float, default=None,
                        help="inverse temperature of --stochastic (default 1)")
    select.add_argument("--num-samples", type=int, default=10_000,
                        help="configuration budget M (default 10000)")
    select.add_argument("--log-probs", action="store_true",
                        help="the file holds natural logs of probabilities")
    select.add_argument("--layout", choices=["NKC", "KNC"], default="NKC",
                        help="NKC (batchbald_redux) or KNC (scikit-activeml); default NKC")
    select.add_argument("--seed", type=int, default=0,
                        help="seed of the draws in sampled steps (default 0: the same "
                             "file gives the same batch every run; vary it to see which "
                             "picks depend on the draws)")
    select.add_argument("--threads", type=int, default=None)
    select.add_argument("--dtype", choices=list(_DTYPES), default="float64",
                        help="precision of the joint predictives and their logs in "
                             "batchbald, epig and batch-epig (entropies of single points "
                             "and every sum stay float64): float32 runs faster, to ~1e-7 "
                             "nats (default float64)")
    select.add_argument("--saturation", choices=["restart", "greedy"], default=None,
                        help="after a sampled step within noise of the most a batch can "
                             "score: start a new greedy run (restart; batchbald's default) "
                             "or keep extending the batch (greedy; batch-epig's default)")
    select.add_argument("--extra-rounds", type=int, default=_noise.EXTRA_ROUNDS, metavar="R",
                        help="most rounds of fresh draws for the contenders of a sampled "
                             f"step whose pick is within noise (default {_noise.EXTRA_ROUNDS};"
                             " 0: none)")
    select.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on this Dask scheduler (e.g. tcp://host:8786), the pool's "
                             "chunks read and held by its workers")
    select.add_argument("--memory-budget", metavar="BYTES",
                        help="peak memory the run may take, e.g. 4GiB (default: "
                             "BATCHBALD_FAST_MEMORY_BUDGET, else the available memory)")
    select.add_argument("--json", action="store_true", help="print JSON")
    select.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (shown only on a terminal: picks done, "
                             "time left; a tqdm bar when tqdm is installed)")

    from ._workloads import DEFAULT, WORKLOADS

    bench = commands.add_parser(
        "bench", help="time the standard workloads (docs/workloads.md in the repository)",
        description="Time the standard workloads on each installed runner and check that "
                    "they pick the same points on the exact steps. The workloads, the "
                    "runners and the commands behind the README's figures are described "
                    "in docs/workloads.md of the source repository.")
    bench.add_argument("--all", action="store_true", help="every workload, not a subset")
    bench.add_argument("--workloads", help=f"comma-separated names from {', '.join(WORKLOADS)} "
                                           f"(default {','.join(DEFAULT)})")
    bench.add_argument("--runners", help="comma-separated: numpy, cython, batchbald_redux, "
                                         "scikit-activeml, baal, batchbald_fast.baal "
                                         "(default: all installed)")
    bench.add_argument("--repeat", type=int, default=1, help="best of this many runs")
    bench.add_argument("--threads", type=int, default=None)
    bench.add_argument("--memory-budget", metavar="BYTES",
                       help="peak memory of the whole run, e.g. 16GiB; runners predicted "
                            "to need more are skipped (default: "
                            "BATCHBALD_FAST_MEMORY_BUDGET, else 4 GiB or the available "
                            "memory if less)")
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")

    demo = commands.add_parser("demo", help="scikit-activeml's BatchBALD example: GIF + PNG")
    demo.add_argument("--out", default="batchbald_fast_demo", metavar="DIR",
                      help="output directory (default ./batchbald_fast_demo)")
    demo.add_argument("--cycles", type=int, default=5)
    return parser


def _load(path, key):
    """The array in a .npy file, or the one named ``key`` in an .npz archive."""
    try:
        loaded = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # numpy's reasons read oddly here (e.g. "pickled data")
        raise _UsageError(f"{path} is not a .npy file of numbers") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        if key is not None:
            raise _UsageError(f"--key picks an array from an .npz archive; {path} is a "
                              ".npy file")
        return loaded
    with loaded:
        names = loaded.files
        if key is None and len(names) == 1:
            key = names[0]
        if key not in names:
            listed = ", ".join(names) if names else "no arrays"
            choose = (f"--key {key} is not one of them" if key is not None else
                      "choose one with --key NAME")
            raise _UsageError(f"{path} is an .npz archive holding {listed}: {choose}")
        try:
            return loaded[key]
        except ValueError as exc:
            raise _UsageError(f"{path}: array {key} is not an array of numbers") from exc


def _select(args):
    objective = _OBJECTIVES[args.objective]
    if args.stochastic and objective.score is None:
        raise _UsageError(f"--stochastic draws by a per-point score: use it with --objective "
                          f"{' or '.join(n for n, o in _OBJECTIVES.items() if o.score)}")
    if args.beta is not None and not args.stochastic:
        raise _UsageError("--beta is the inverse temperature of --stochastic")
    if args.dtype != "float64" and not objective.takes_dtype:
        raise _UsageError(f"--dtype is the precision of joint predictives; --objective "
                          f"{args.objective} computes none")
    if (args.targets is not None) != objective.needs_targets:
        raise _UsageError(f"--objective {args.objective} needs --targets"
                          if objective.needs_targets else
                          f"--targets is for --objective epig or batch-epig, not "
                          f"{args.objective}")
    probs = _open_probs(args, args.probs, args.key)
    if objective.score is None:
        _select_greedy(args, probs, objective)
    else:
        _select_by_score(args, probs, objective)


def _open_probs(args, path, key):
    """The probabilities at ``path`` as (N, K, C), a Dask pool when read chunk by chunk."""
    if path == args.probs and (args.scheduler or os.path.isdir(path)):
        # Read by Dask tasks, chunk by chunk.
        from .dask import open_pool
        try:
            return open_pool(path, layout=args.layout)
        except OSError as exc:  # zarr's "no array found" too
            raise _UsageError(f"cannot read {path}: {exc}") from exc
    probs = _load(path, key)
    if args.layout == "KNC":
        if probs.ndim != 3:
            raise _UsageError(f"{path} must have 3 dimensions, got shape {probs.shape}")
        probs = probs.transpose(1, 0, 2)
    return probs


def _select_greedy(args, probs, objective):
    from ._backend import backend_info

    # Progress on a terminal only: a log file gets no carriage returns.
    show = not args.quiet and sys.stderr.isatty()
    reporter = contextlib.nullcontext(show)  # True: batchbald's tqdm bar
    if show and importlib.util.find_spec("tqdm") is None:
        reporter = _StepLine("batchbald-fast select")
    with _dask_client(args.scheduler), reporter as progress:
        try:
            result = objective.greedy(args, probs, progress)
        except ValueError as exc:
            if args.log_probs or "negative probability" not in str(exc):
                raise
            raise _UsageError(f"{exc}; if the file holds log-probabilities, pass "
                              "--log-probs") from exc
    if args.json:  # every per-step field, and the backend that ran
        print(json.dumps({**_result.to_json(result), "backend": backend_info()["backend"]}))
        return
    print(f"{'step':>4}  {'index':>8}  {'score':>10}  {'joint':>7}  {'configurations':>14}  "
          "std error")
    for t in range(len(result.indices)):
        std_error = result.std_errors[t]
        noise = "" if np.isnan(std_error) else f"{std_error:.2g}" + (
            "  (pick within noise)" if result.ambiguous[t] else "")
        print(f"{t:>4}  {result.indices[t]:>8}  {result.scores[t]:>10.6f}  "
              f"{result.mode[t]:>7}  {result.num_configurations[t]:>14}  {noise}")


class _Objective:
    """A ``select --objective``: ``score(args, probs)`` gives per-point scores and their
    standard errors (or None) for a top-k or stochastic batch; else ``greedy(args, probs,
    progress)`` the ``BatchResult`` of a greedy batch."""

    def __init__(self, score=None, greedy=None, needs_targets=False, takes_dtype=True):
        self.score, self.greedy = score, greedy
        self.needs_targets, self.takes_dtype = needs_targets, takes_dtype


def _greedy_options(args, progress):
    """The options every greedy objective's call takes from the command line."""
    options = {"num_samples": args.num_samples, "log_probs": args.log_probs,
               "random_state": args.seed, "num_threads": args.threads,
               "memory_budget": args.memory_budget, "progress": progress,
               "dtype": _DTYPES[args.dtype]}
    if args.saturation is not None:
        options["saturation"] = args.saturation
    return options


def _batchbald(args, probs, progress):
    from ._api import batchbald
    return batchbald(probs, args.batch_size, extra_rounds=args.extra_rounds,
                     **_greedy_options(args, progress))


def _batch_epig(args, probs, progress):
    from ._api import batch_epig
    return batch_epig(np.asarray(probs), _open_probs(args, args.targets, None),
                      args.batch_size, **_greedy_options(args, progress))


def _bald_scores(args, probs):
    from ._api import bald
    return bald(np.asarray(probs), log_probs=args.log_probs), None


def _epig_scores(args, probs):
    from ._api import epig
    targets = _open_probs(args, args.targets, None)
    options = {"log_probs": args.log_probs, "num_threads": args.threads,
               "memory_budget": args.memory_budget, "dtype": _DTYPES[args.dtype]}
    if len(targets) < 2:  # no standard error from one target
        return epig(np.asarray(probs), targets, **options), None
    return epig(np.asarray(probs), targets, return_std_error=True, **options)


_OBJECTIVES = {"batchbald": _Objective(greedy=_batchbald),
               "batch-epig": _Objective(greedy=_batch_epig, needs_targets=True),
               "bald": _Objective(_bald_scores, takes_dtype=False),
               "epig": _Objective(_epig_scores, needs_targets=True)}


def _select_by_score(args, probs, objective):
    """The top ``--batch-size`` scores, or a ``--stochastic`` draw by them."""
    from ._backend import backend_info

    with _Progress(f"batchbald-fast select --objective {args.objective}",
                   not args.quiet), _dask_client(args.scheduler):
        scores_N, std_errors_N = objective.score(args, probs)
    beta = 1.0 if args.beta is None else args.beta
    if args.stochastic:
        indices = _stochastic.stochastic_batch(scores_N, args.batch_size, mode=args.stochastic,
                                               beta=beta, random_state=args.seed)
    else:
        batch_size = _validation.check_count(args.batch_size, "batch_size", minimum=0)
        indices = _search.top_k(scores_N, min(batch_size, len(scores_N)))
    scores = scores_N[indices]
    if args.json:
        out = {"indices": indices.tolist(), "scores": scores.tolist(),
               "objective": args.objective, "stochastic": args.stochastic,
               "beta": beta if args.stochastic else None,
               "backend": backend_info()["backend"]}
        if std_errors_N is not None:
            out["std_errors"] = std_errors_N[indices].tolist()
        print(json.dumps(out))
        return
    print(f"{'rank':>4}  {'index':>8}  {args.objective:>10}" +
          ("  std error" if std_errors_N is not None else ""))
    for rank, (index, score) in enumerate(zip(indices, scores)):
        error = "" if std_errors_N is None else f"  {std_errors_N[index]:.2g}"
        print(f"{rank:>4}  {index:>8}  {score:>10.6f}{error}")


def _dask_client(address):
    """A ``distributed.Client`` of the scheduler at ``address`` while selecting, if any."""
    if address is None:
        return contextlib.nullcontext()
    from distributed import Client
    try:
        return Client(address, timeout=10)
    except OSError as exc:
        raise _UsageError(f"cannot reach a Dask scheduler at {address}: {exc}") from exc


@contextlib.contextmanager
def _environ(name, value):
    """``os.environ[name] = value`` for the duration."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def _bench(args):
    from . import _memory, _workloads

    if args.workloads:
        names = [n.strip() for n in args.workloads.split(",") if n.strip()]
        unknown = [n for n in names if n not in _workloads.WORKLOADS]
        if unknown:
            raise _UsageError(f"unknown workload {unknown[0]}; choose from "
                              f"{', '.join(_workloads.WORKLOADS)}")
    else:
        names = list(_workloads.WORKLOADS) if args.all else list(_workloads.DEFAULT)
    runners = _workloads.available_runners()
    if args.runners:
        wanted = [r.strip() for r in args.runners.split(",") if r.strip()]
        missing = [r for r in wanted if r not in runners]
        if missing:
            raise _UsageError(f"runner {missing[0]} is not available here; installed: "
                              f"{', '.join(runners)}")
        runners = {r: runners[r] for r in wanted}
    if args.repeat < 1:
        raise _UsageError(f"--repeat must be ≥ 1, got {args.repeat}")
    budget = _workloads.bench_budget(args.memory_budget)

    os.environ.setdefault("TQDM_DISABLE", "1")  # batchbald_redux's own progress bars
    # The runners import their library at each call: import once so no timing includes it.
    _workloads.import_runner_modules(runners)
    widths = {name: max(len(name), 9) for name in runners}
    header = f"{'workload':<8} {'N':>6} {'K':>4} {'C':>4} {'b':>3} {'M':>6}"
    print(header + "".join(f" {name:>{widths[name]}}" for name in runners)
          + "  same exact picks", flush=True)
    total = len(names) * len(runners)
    done = 0
    notes = []
    for name in names:
        w = _workloads.WORKLOADS[name]
        probs = w.probs()
        # Steps whose joint is exact: there every correct implementation picks the same.
        exact_steps = sum(w.C ** t <= w.num_samples for t in range(w.batch_size))
        cells, picks = [], {}
        for runner_name, run in runners.items():
            done += 1
            # What the budget leaves beside this process: our runs get it as theirs.
            room = budget - _memory.resident_bytes()
            skip = _workloads.skip_reason(runner_name, w, room)
            if skip:
                cells.append("skipped")
                notes.append(f"{runner_name} skipped on {name}: {skip}")
                continue
            best = np.inf
            with _Progress(f"[{done}/{total}] {name} {runner_name}", not args.quiet), \
                    _environ(_memory.ENV_VAR, str(max(1, int(room)))):
                try:
                    for _ in range(args.repeat):
                        start = time.perf_counter()
                        indices = run(probs, w.batch_size, w.num_samples, args.threads)
                        best = min(best, time.perf_counter() - start)
                except _memory.MemoryBudgetError as exc:
                    cells.append("skipped")
                    notes.append(f"{runner_name} skipped on {name}: {exc}")
                    continue
                except (Exception, MemoryError) as exc:  # one runner failing ends no table
                    print(f"{name} {runner_name}: {type(exc).__name__}: {exc}",
                          file=sys.stderr)
                    cells.append("failed")
                    continue
            picks[runner_name] = np.asarray(indices)[:exact_steps].tolist()
            cells.append(f"{best:.3f} s")
        different = _workloads.differing_runners(picks)
        same = "yes" if not different else "NO: " + ", ".join(
            f"{r} (by design)" if r in _workloads.DIFFERS_BY_DESIGN else r for r in different)
        notes.extend(f"{r} differs on {name} by design: {_workloads.DIFFERS_BY_DESIGN[r]}"
                     for r in different if r in _workloads.DIFFERS_BY_DESIGN)
        print(f"{name:<8} {w.N:>6} {w.K:>4} {w.C:>4} {w.batch_size:>3} {w.num_samples:>6}"
              + "".join(f" {cell:>{widths[r]}}" for r, cell in zip(runners, cells))
              + f"  {same} ({exact_steps} steps)", flush=True)
    for note in notes:
        print(note)


def _demo(args):
    from . import demo

    if args.cycles < 1:
        raise _UsageError(f"--cycles must be ≥ 1, got {args.cycles}")
    # No progress line: the demo reports every cycle as it goes.
    demo.run(args.out, n_cycles=args.cycles, log=lambda line: print(line, flush=True))


def main(argv=None):
    """Run the command line; returns the exit status (2 for bad files or arguments, 130
    when interrupted by Ctrl-C)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        {"select": _select, "bench": _bench, "demo": _demo}[args.command](args)
    except _UsageError as exc:
        print(f"batchbald-fast: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as exc:  # the checks of _validation: the input is wrong
        print(f"batchbald-fast: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency the command needs
        print(f"batchbald-fast: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the shell's convention, 128 + SIGINT
        print("batchbald-fast: interrupted", file=sys.stderr)
        return 130
    return 0

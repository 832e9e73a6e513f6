"""BatchBALD on a pool held by Dask: chunks on a cluster's workers, or read from disk.

``batchbald`` takes a ``dask.array.Array`` (or a ``zarr.Array``) of shape (N, K, C) and
runs the same greedy driver as for an in-memory pool, on the client; the pool's answers and
the driver's per-point state come from the chunks. Picks and scores equal the in-memory
call's on the same values (sampled steps included: the search scores the same candidates
in the same order).

Where things live:

- the pool, in its chunks along N: in the workers' memory when a ``distributed.Client`` is
  active (persisted after the first pass: every step reads the chunks it touches again,
  and rereading a compressed zarr chunk costs more than scoring its candidates), else read
  from its source at every task (Dask's local scheduler: a memmap or a zarr store stays on
  disk);
- every per-point number of the driver, in one :class:`_ChunkState` per chunk beside it:
  the points' conditional entropies, which are still candidates, their last-gain bounds,
  the step's search over them (each candidate's bound, its rounding and how far it was
  refined) and, with ``return_utilities=True``, every step's utilities. A state is never
  changed in place: each task takes a chunk's state and returns the next one, persisted,
  so that a state lost with its worker is recomputed by Dask from its lineage (the first
  pass over the chunk, then every task since, each a pure function of the state before
  it, the chunk and the step's joint);
- on the client, no number per point: per chunk its candidates left and the last task's
  summary (its best utilities, counts, and per level of the search a sketch of its best
  bounds: at most ``SKETCH`` keys at known ranks), the driver's O(batch) state, the
  contenders of a sampled step (at most ``_noise.MAX_CONTENDERS``: their rows and rounds,
  as in memory), and the joint of a step (M × K, at most a few MiB), sent to the workers
  once per joint (a persisted task) and reused by every task of that joint. So the client
  holds O(chunks · SKETCH + contenders · M + batch) numbers, whatever N and the tiles.

A step's search (:class:`_Search`) runs the branch and bound of ``_search.BranchAndBound``
over the chunks' summaries: each round picks the same level and the same tile of
candidates as in memory (the best bounds, ties to the lowest index), as a cut of the order
of (bound, index) that each chunk holding some of the tile applies to its own candidates;
where the sketches leave the cut's rank uncertain, the chunks are asked about a window of
keys around it (a round of small tasks) until it is known.
A chunk with no candidate of a call gets no task and is not read.
"""

import copy
import itertools
import os
import uuid

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # an optional extra
    raise ImportError("pools on Dask need dask[array] (and distributed for a cluster): "
                      "pip install 'batchbald_fast[dask]'") from exc

from . import _backend, _noise, _pool, _search, _validation

# Joints whose broadcast copies are kept: the driver alternates between a step's coarse
# and full joints.
STATES_KEPT = 4
# Keys per level in a chunk's sketch of its bounds (what the client holds of a chunk's
# order, whatever the tile: _Search).
SKETCH = 256


def _active_client():
    """The ``distributed.Client`` that ``dask.compute`` would run on, or None."""
    client = getattr(dask.base.get_scheduler(), "__self__", None)
    return client if type(client).__module__.startswith("distributed") else None


def as_dask_array(probs_N_K_C):
    """A dask array of the pool, chunked along N only (a zarr array is opened lazily)."""
    if not isinstance(probs_N_K_C, da.Array):
        probs_N_K_C = da.from_zarr(probs_N_K_C)
    return probs_N_K_C.rechunk({1: -1, 2: -1})


def open_pool(path, *, layout="NKC"):
    """A pool on disk as a lazy dask array: a zarr store, or a ``.npy`` file that each task
    reads through a memory map (so that workers on the same file system read their own
    chunks, and nothing of the pool passes through the client).

    Parameters
    ----------
    path : str
        A zarr store (a directory) or a ``.npy`` file.
    layout : {"NKC", "KNC"}, default="NKC"
        Whether the array is stored (N, K, C) or (K, N, C); either way the result is
        (N, K, C), chunked along N.

    Returns
    -------
    probs_N_K_C : dask.array.Array
    """
    axis = 0 if layout == "NKC" else 1
    path = os.path.abspath(path)  # workers may run elsewhere on the same file system
    if os.path.isdir(path):
        stored = da.from_zarr(path)
    else:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        if not isinstance(header, np.ndarray):  # an .npz archive cannot be memory-mapped
            raise ValueError(f"{path} is not a .npy file: only .npy files and zarr stores "
                             "are read chunk by chunk")
        chunks = da.core.normalize_chunks(
            tuple("auto" if i == axis else -1 for i in range(header.ndim)), header.shape,
            dtype=header.dtype)
        stored = da.concatenate([
            da.from_delayed(dask.delayed(_read_npy)(path, axis, start, start + size),
                            header.shape[:axis] + (size,) + header.shape[axis + 1:],
                            dtype=header.dtype)
            for start, size in zip(np.cumsum((0,) + chunks[axis]), chunks[axis])], axis=axis)
    if layout == "NKC":
        return stored
    if stored.ndim != 3:
        raise ValueError(f"{path} must have 3 dimensions, got shape {stored.shape}")
    return stored.transpose(1, 0, 2)


def _read_npy(path, axis, start, stop):
    return np.load(path, mmap_mode="r")[(slice(None),) * axis + (slice(start, stop),)]


def map_points(function, obj, X_N_F, shape_K_C):
    """The lazy pool ``function(obj, block)`` over the blocks of X's rows, float64.

    ``obj`` (a fitted ensemble) enters the graph once; X is rechunked to whole rows.
    """
    X_N_F = X_N_F.rechunk({axis: -1 for axis in range(1, X_N_F.ndim)})
    return da.map_blocks(function, dask.delayed(obj), X_N_F, dtype=np.float64,
                         chunks=(X_N_F.chunks[0],) + tuple((n,) for n in shape_K_C),
                         drop_axis=list(range(1, X_N_F.ndim)), new_axis=[1, 2],
                         meta=np.empty((0, 0, 0)))



class DaskPool:
    """A pool held as a chunked Dask array: the driver's questions become chunk tasks.

    Parameters
    ----------
    probs_N_K_C : dask.array.Array or zarr.Array of shape (N, K, C)
        Probabilities (or log-probabilities), chunked along N; chunks along K and C are
        merged.
    log_probs : bool, default=False
    dtype : numpy.float64 or numpy.float32, default=numpy.float64
        Precision of the kernels' products and logs.
    num_threads : int or None, default=None
        Threads of each task's kernels; None: 1 (Dask's workers run the chunks in
        parallel).
    persist : bool or None, default=None
        Keep the validated chunks in the workers' memory after the first pass. None: when
        a ``distributed.Client`` is active.

    Attributes
    ----------
    shape, dtype, row_sum_range
        As ``_pool.ArrayPool``.
    cond_entropy_N
        Each point's conditional entropy, read from its chunk's state when indexed by one
        point (the pick's, once a step).
    calls : list of ndarray
        For each round of chunk tasks of a search, the chunks it ran a task on.
    """

    def __init__(self, probs_N_K_C, *, log_probs=False, dtype=np.float64, num_threads=None,
                 persist=None):
        probs_N_K_C = as_dask_array(probs_N_K_C)
        _validation.check_probs_header(probs_N_K_C.dtype, probs_N_K_C.shape)
        self.shape = probs_N_K_C.shape
        self.dtype = np.dtype(dtype).type
        self.calls = []
        # The client's choice: workers must not fall back on another backend (or read
        # their own environment), or scores would differ from the in-memory call's.
        self._backend = _backend.backend_info()["backend"]
        self._num_threads = 1 if num_threads is None else num_threads
        self._starts = np.cumsum((0,) + probs_N_K_C.chunks[0])
        self._joints = []

        # The first pass: every chunk validated, its probabilities and first state made.
        blocks = probs_N_K_C.to_delayed().ravel()
        parts = [dask.delayed(_first_pass, nout=2)(block, start, log_probs, self._backend,
                                                   self._num_threads)
                 for block, start in zip(blocks, self._starts)]
        client = _active_client()
        self._tasks = _Delayed()
        if client is not None if persist is None else persist:
            if client is not None:
                self._tasks = _Futures(client)
            persisted = self._tasks.persist([part[0] for part in parts]
                                            + [part[1] for part in parts])
            self._chunks, self._first = persisted[:len(parts)], persisted[len(parts):]
        else:
            self._first = self._tasks.persist([part[1] for part in parts])
            self._chunks = [dask.delayed(_validation.as_probabilities)(block,
                                                                       log_probs=log_probs)
                            for block in blocks]
        stats = self._tasks.compute(_header, self._first)
        _validation.raise_first_problem(problems for problems, _ in stats)
        self.row_sum_range = (min(low for _, (low, _) in stats),
                              max(high for _, (_, high) in stats))
        self.cond_entropy_N = _PointValues(self._tasks, self._first, self._starts)

    def points(self, candidates, first_gain_N, utility_steps):
        """The driver's per-point state, in the chunks (:class:`_Points`)."""
        if first_gain_N is not None:
            raise ValueError("objectives with first gains of their own run on in-memory "
                             "pools only")
        return _Points(self, candidates, utility_steps)

    def rows(self, xs):
        """``probs_N_K_C[xs]``, float64, shape (len(xs), K, C): one task per chunk."""
        xs = np.asarray(xs, dtype=np.intp)
        out = np.empty((len(xs),) + self.shape[1:])
        chunk_n = self._chunk_of(xs)
        order = np.argsort(chunk_n, kind="stable")
        chunks, first = np.unique(chunk_n[order], return_index=True)
        groups = list(zip(chunks.tolist(), np.split(order, first[1:])))
        for (_, at), rows_n_K_C in zip(groups, self._tasks.compute(
                _pool.rows, [self._chunks[chunk] for chunk, _ in groups],
                [xs[at] - self._starts[chunk] for chunk, at in groups])):
            out[at] = rows_n_K_C
        return out

    def _chunk_of(self, xs):
        return _chunk_of(self._starts, xs)

    def _broadcast(self, joint_M_K, weights_M, offset_K):
        """The joint as tasks receive it, made once per joint (tracked by identity: the
        driver passes the same arrays while the joint lasts).

        On a cluster it is a task holding the arrays, persisted: workers fetch it once, and
        the scheduler can make it again if its worker dies (scattered data it could not).
        """
        joint = (joint_M_K, weights_M, offset_K)
        for kept, handle in self._joints:
            if all(a is b for a, b in zip(kept, joint)):
                return handle
        handle, = self._tasks.map(_same, [joint])
        self._joints = [(joint, handle)] + self._joints[:STATES_KEPT - 1]
        return handle

    def _task_args(self):
        return self._backend, self._num_threads


def _chunk_of(starts, xs):
    """The chunk of each pool index, from the chunks' first indices."""
    return np.searchsorted(starts, xs, side="right") - 1


class _Delayed:
    """Chunk tasks on Dask's current scheduler, as delayed calls (a pool left in its
    source, or no ``distributed.Client``)."""

    @staticmethod
    def persist(delayed):
        return dask.persist(*delayed)

    def map(self, function, *iterables):
        """``function`` on each tuple of the iterables' items, persisted."""
        return self.persist([dask.delayed(function)(*args) for args in zip(*iterables)])

    @staticmethod
    def compute(function, *iterables):
        """``function`` on each tuple of the iterables' items: the results."""
        return dask.compute(*(dask.delayed(function)(*args) for args in zip(*iterables)))


class _Futures(_Delayed):
    """Chunk tasks on a ``distributed.Client``, submitted on the futures of the chunks and
    states: no graph to build, tokenize and optimize per task, and a state or result
    is released on the cluster as soon as the client drops its future. Keys are unique
    per pool and counted (no random key per task)."""

    def __init__(self, client):
        self._client = client
        self._prefix = f"batchbald-{uuid.uuid4().hex}"
        self._count = itertools.count()

    def persist(self, delayed):
        return self._client.compute(delayed)

    def map(self, function, *iterables):
        iterables = [list(items) for items in iterables]
        keys = [f"{function.__name__}-{self._prefix}-{next(self._count)}"
                for _ in iterables[0]]
        return self._client.map(function, *iterables, key=keys, pure=False)

    def compute(self, function, *iterables):
        return self._client.gather(self.map(function, *iterables))


class _PointValues:
    """``cond_entropy_N[x]`` of one point, read from its chunk's first state.

    It holds the pool's states, not the pool: a pool in no reference cycle is freed (and
    its chunks released on the cluster) as soon as the call drops it, not at the next
    garbage collection.
    """

    def __init__(self, tasks, first, starts):
        self._tasks, self._first, self._starts = tasks, first, starts

    def __getitem__(self, x):
        chunk = int(_chunk_of(self._starts, x))
        return self._tasks.compute(_cond_entropy_at, [self._first[chunk]],
                                   [x - self._starts[chunk]])[0]


class _Remaining:
    """The candidates left, as the driver sees them on Dask: how many."""

    def __init__(self, count):
        self._count = count

    def __len__(self):
        return self._count


class _Points:
    """The driver's per-point state (``_pool.PointState``'s methods), in the chunks.

    The client keeps, per chunk, its current state (a persisted task), its candidates left
    and the operations the driver asked of it since its last task (taking a pick, a step's
    gains and utilities, a reset), which the chunk's next task applies first: a step's end
    costs no task of its own.
    """

    def __init__(self, pool, candidates, utility_steps):
        self._pool = pool
        starts = pool._starts
        if candidates is None:
            counts = np.diff(starts)
            local = [None] * len(counts)
        else:
            cuts = np.searchsorted(candidates, starts)
            counts = np.diff(cuts)
            local = [candidates[a:b] - start for a, b, start in zip(cuts[:-1], cuts[1:],
                                                                    starts)]
        self._counts = counts.tolist()
        self._had = [n > 0 for n in self._counts]
        self.count = int(counts.sum())
        self._states = list(pool._first)
        self._pending = [[("points", xs, utility_steps)] if n else []
                         for xs, n in zip(local, self._counts)]
        self._utility_steps = utility_steps

    def _active(self):
        return [chunk for chunk, n in enumerate(self._counts) if n]

    def remaining(self):
        return _Remaining(self.count)

    def take(self, x):
        chunk = int(self._pool._chunk_of(x))
        self._pending[chunk].append(("take", int(x - self._pool._starts[chunk])))
        self._counts[chunk] -= 1
        self.count -= 1

    def reset_gains(self):
        for chunk in self._active():
            self._pending[chunk].append(("reset",))

    def upper_bounds(self, base, remaining):
        """Bounds ``base + upper_gain`` of each chunk's candidates, made in the chunk."""
        return _Base(base)

    def search(self, utility, bounds, remaining, upper_n, tile, tie_tolerance):
        return _Search(self, utility, bounds, upper_n, tile, tie_tolerance)

    def scored(self, outcome, error_bound, score):
        self._queue(outcome, "gains", error_bound, score)

    def keep_utilities(self, t, outcome):
        if self._utility_steps is not None:
            self._queue(outcome, "utilities", t)

    def _queue(self, outcome, *op):
        """An operation on the scored candidates of every chunk of the step's search."""
        pick = outcome.choice
        for chunk in outcome.chunks:
            start = self._pool._starts[chunk]
            local = None if pick is None or not start <= pick[0] < self._pool._starts[
                chunk + 1] else (int(pick[0] - start), pick[1])
            self._pending[chunk].append(op + (local,))

    def utilities(self):
        """Every step's utilities as a dask array of shape (steps, N), chunked like the
        pool, made on the workers from the chunks' states (None unless kept)."""
        if self._utility_steps is None:
            return None
        steps = self._utility_steps
        return da.concatenate([
            da.from_delayed(dask.delayed(_utilities)(state, pending), (steps, n),
                            dtype=np.float64) if had else da.full((steps, n), np.nan)
            for state, pending, n, had in zip(self._states, self._pending,
                                              np.diff(self._pool._starts).tolist(),
                                              self._had)], axis=1)

    def run(self, chunks, function, *args):
        """``function(state, pending, *args)`` on each chunk's state, persisted as its
        next; then every new state's summary."""
        pending = [self._pending[chunk] for chunk in chunks]
        for chunk in chunks:
            self._pending[chunk] = []
        tasks = self._pool._tasks
        new = tasks.map(function, [self._states[chunk] for chunk in chunks], pending, *(
            [self._pool._chunks[chunk] for chunk in chunks] if arg is _CHUNK else
            [arg] * len(chunks) for arg in args))
        for chunk, state in zip(chunks, new):
            self._states[chunk] = state
        return tasks.compute(_summary_of, new)

    def ask(self, chunks, function, *args):
        """``function(state, *args)`` of each chunk's state (no new state)."""
        return self._pool._tasks.compute(function, [self._states[chunk] for chunk in chunks],
                                         *([arg] * len(chunks) for arg in args))


# Marks the argument of ``_Points.run`` that is each chunk's probabilities.
_CHUNK = object()


class _Base:
    """``upper_bounds`` on Dask: each candidate's bound is ``base`` plus its last gain."""

    def __init__(self, base):
        self.base = base


class _Search:
    """``_search.Search`` over the chunks: the same candidates scored in the same order.

    Each round of the branch and bound (``_search.BranchAndBound.run``) needs the
    ``top``-th best utility scored (the threshold), the open candidate with the best bound
    (its level decides the refinement) and that level's tile of best bounds, cut at its
    last: the tile-th best open (bound, index). Every chunk's summary gives its best
    utilities and, per level, a sketch of its best bounds (at most ``SKETCH`` of them, at
    known ranks of its order), so the client knows the number of a chunk's candidates
    before any key only within the gaps of its sketch. The cut is then found as in a
    selection over sorted lists: the keys whose total rank may be the tile's last are
    narrowed to a window, which the chunks whose sketch leaves a gap in it describe again
    (:func:`_window`), until every chunk's candidates in the window are known. The client
    so holds some ``SKETCH`` keys per chunk and level, whatever the tile.
    """

    def __init__(self, points, utility, bounds, upper_n, tile, tie_tolerance):
        self._points = points
        self._refine = [bound for bound, _ in bounds] + [utility]
        self._tiles = [t for _, t in bounds] + [tile]
        self._bounds, self._utility = bounds, utility
        self._tie_tolerance = tie_tolerance
        self._searched = bool(bounds) or upper_n is not None
        self._chunks = points._active()
        self._N = points._pool.shape[0]
        self._summaries, self._known = {}, {}
        base = None if upper_n is None else upper_n.base
        self._update(self._chunks, points.run(self._chunks, _begin, base,
                                              len(self._refine), self._wants(), SKETCH,
                                              tie_tolerance))

    def _wants(self):
        """How many of its best bounds per level a chunk's sketch spans: twice its share
        of the level's tile, and 16 more."""
        share = max(1, len(self._chunks))
        return [max(1, min(tile, -(-2 * tile // share) + 16)) for tile in self._tiles]

    def _update(self, chunks, summaries):
        """New summaries of these chunks; what is known of their order starts from them."""
        for chunk, summary in zip(chunks, summaries):
            self._summaries[chunk] = summary
            self._known[chunk] = [_Known.of_sketch(*listed, num_at, self._N)
                                  for listed, num_at in zip(summary.listed,
                                                            summary.num_at)]

    def run(self, top=1, resolution=0.0):
        """As ``_search.Search.run``: the :class:`_Outcome`."""
        levels = len(self._refine)
        while True:
            summaries = self._summaries
            threshold = -np.inf
            if sum(s.num_scored for s in summaries.values()) >= top:
                best_u = np.sort(np.concatenate([s.top_u for s in summaries.values()]))
                threshold = best_u[-top] - self._tie_tolerance + resolution
            head = None  # (bound, -index, level) of the open candidate with the best bound
            for s in summaries.values():
                for level in range(levels):
                    bound_n, index_n, _ = s.listed[level]
                    if len(bound_n) and bound_n[0] >= threshold:
                        head = max(head or (-np.inf, 0, 0), (bound_n[0], -index_n[0], level))
            if head is None:
                break
            level = head[2]
            if np.isinf(head[0]):  # no order among unbounded candidates: one call
                cut = (np.inf, self._N)
                chunks = [c for c, s in summaries.items() if s.num_inf[level]]
                n = sum(summaries[c].num_inf[level] for c in chunks)
            else:
                cut, chunks, n = self._tile(level, threshold)
                self._tiles[level] *= 2
            scorer = self._refine[level].scorer()
            scorer.count(n)
            self._points._pool.calls.append(np.array(chunks, dtype=np.intp))
            self._update(chunks, self._points.run(
                chunks, _refine, _CHUNK, level, levels, cut,
                self._points._pool._broadcast(*scorer.joint), scorer.constants,
                *self._points._pool._task_args(), self._wants(), SKETCH,
                self._tie_tolerance))
        return _Outcome(self, top)

    def _tile(self, level, threshold):
        """The cut (bound, index) of the level's tile of best open bounds (those at least
        ``threshold``), the chunks holding it and its size."""
        tile, last = self._tiles[level], (threshold, self._N)
        while True:
            chunks = list(self._summaries)
            known = [self._known[c][level] for c in chunks]
            # The keys the cut may be: every known open candidate, and the last open key.
            bound_q = np.concatenate([k.bound[k.entry & (k.bound >= threshold)]
                                      for k in known] + [[threshold]])
            index_q = np.concatenate([k.index[k.entry & (k.bound >= threshold)]
                                      for k in known] + [[self._N]])
            order = np.lexsort((index_q, -bound_q))
            bound_q, index_q = bound_q[order], index_q[order]
            low_q, high_q = _Known.total_counts(known, bound_q, index_q)
            # The cut is after every key that fewer than a tile come before, and at the
            # first that a tile surely come before (or at the last open key).
            after = np.flatnonzero(high_q < tile)
            after = after[-1] if len(after) else None
            upto = np.flatnonzero(low_q >= tile)
            upto = upto[0] if len(upto) else len(bound_q) - 1
            window = (None if after is None else (bound_q[after], index_q[after]),
                      (bound_q[upto], index_q[upto]))
            vague = [c for c, k in zip(chunks, known) if not k.exact(*window)]
            if not vague:
                break
            for chunk, answer in zip(vague, self._points.ask(vague, _window, level, *window,
                                                             SKETCH)):
                self._known[chunk][level] = self._known[chunk][level].merge(
                    _Known.of_window(*window, *answer))
        if low_q[upto] >= tile:
            cut, n = window[1], tile
        else:  # fewer than a tile open
            cut, n = last, int(low_q[upto])
        taken = [c for c, k in zip(chunks, known)
                 if k.counts(np.array([cut[0]]), np.array([cut[1]]))[0][0] > 0]
        return cut, taken, n


class _Known:
    """What the client knows of one chunk's order at one level: the number of its
    candidates up to some keys (bound, index) of that order, sorted; between two known keys
    it has ``count - count before - entry`` unknown candidates.

    Keys are compared as the search orders them: higher bounds first, then lower indices.
    The first and last keys stand for before and after every candidate.
    """

    def __init__(self, bound, index, count, entry):
        self.bound, self.index, self.count, self.entry = bound, index, count, entry

    @classmethod
    def _of(cls, bound, index, count, entry, ends):
        return cls(np.concatenate([[np.inf], bound, [-np.inf]]),
                   np.concatenate([[-1], index, [ends[1]]]),
                   np.concatenate([[0], count, [ends[0]]]).astype(np.intp),
                   np.concatenate([[False], entry, [False]]))

    @classmethod
    def of_sketch(cls, bound_e, index_e, count_e, num_at, N):
        """From a summary's sketch of its candidates at a level (``num_at`` of them)."""
        return cls._of(bound_e, index_e, count_e, np.ones(len(bound_e), dtype=bool),
                       (num_at, N + 1))

    @classmethod
    def of_window(cls, after, upto, before, after_is_entry, bound_e, index_e, count_e,
                  in_window, upto_is_entry):
        """From a chunk's answer about the window of keys after ``after`` up to ``upto``."""
        bound = [bound_e, [upto[0]]]
        index = [index_e, [upto[1]]]
        count = [count_e, [before + in_window]]
        entry = [np.ones(len(bound_e), dtype=bool), [upto_is_entry]]
        if after is not None:
            bound, index = [[after[0]]] + bound, [[after[1]]] + index
            count, entry = [[before]] + count, [[after_is_entry]] + entry
        return cls(*(np.concatenate(parts) for parts in (bound, index, count, entry)))

    def merge(self, other):
        """Both known together."""
        parts = [np.concatenate([a, b]) for a, b in zip(
            (self.bound, self.index, self.count, self.entry),
            (other.bound, other.index, other.count, other.entry))]
        order = np.lexsort((parts[1], -parts[0]))
        bound, index, count, entry = (part[order] for part in parts)
        new = np.ones(len(bound), dtype=bool)
        new[1:] = (bound[1:] != bound[:-1]) | (index[1:] != index[:-1])
        return _Known(bound[new], index[new], count[new], entry[new])

    def _position(self, bound_q, index_q, side):
        return _position(self.bound, self.index, bound_q, index_q, side)

    @staticmethod
    def total_counts(knowns, bound_q, index_q):
        """The least and most candidates of all these chunks together up to each query
        key (the sum of their ``counts``), from one sort of all their keys: the client's
        work grows as the keys, not as the chunks times the keys.

        Passing a chunk's key j (not its first or last, which stand for before and after
        every query) moves its least count from ``count[j - 1]`` to ``count[j]`` and its
        most from ``count[j] - entry[j]`` to ``count[j + 1] - entry[j + 1]``.
        """
        most = [k.count - k.entry for k in knowns]
        bound_k = np.concatenate([k.bound[1:-1] for k in knowns])
        index_k = np.concatenate([k.index[1:-1] for k in knowns])
        order = np.lexsort((index_k, -bound_k))
        low_k = np.concatenate([[0]] + [np.diff(k.count)[:-1] for k in knowns])
        high_k = np.concatenate([[0]] + [np.diff(m)[1:] for m in most])
        low_k[1:], high_k[1:] = low_k[1:][order], high_k[1:][order]
        passed = _position(bound_k[order], index_k[order], bound_q, index_q, "right")
        return (np.cumsum(low_k)[passed],
                sum(int(m[1]) for m in most) + np.cumsum(high_k)[passed])

    def counts(self, bound_q, index_q):
        """The least and most candidates up to each query key."""
        at = self._position(bound_q, index_q, "right") - 1  # the last known key not after
        low = self.count[at]
        high = self.count[at + 1] - self.entry[at + 1]
        return np.array([low, high])

    def exact(self, after, upto):
        """Whether every candidate from ``after`` (exclusive) to ``upto`` is known."""
        first = 0 if after is None else self._position(np.array([after[0]]),
                                                       np.array([after[1]]), "right")[0] - 1
        stop = self._position(np.array([upto[0]]), np.array([upto[1]]), "left")[0]
        gaps = self.count[first + 1:stop + 1] - self.count[first:stop] - \
            self.entry[first + 1:stop + 1]
        return not gaps.any()


class _Outcome:
    """``_search.Outcome``'s answers for a search over chunks, from their summaries (and,
    for the contenders of a sampled step, a question to each chunk)."""

    def __init__(self, search, top):
        self._search = search
        summaries = search._summaries
        self.chunks = list(summaries)
        self.num_evaluations = sum(s.num_scored for s in summaries.values())
        top_u = np.concatenate([s.top_u for s in summaries.values()])
        top_x = np.concatenate([s.top_x for s in summaries.values()])
        order = np.lexsort((top_x, -top_u))
        self._top_x, self._top_u = top_x[order], top_u[order]
        # The pick: the lowest index within the tolerance of the best (_search.best_index).
        near_u = np.concatenate([s.near_u for s in summaries.values()])
        near_x = np.concatenate([s.near_x for s in summaries.values()])
        near = near_u >= top_u.max() - search._tie_tolerance
        at = np.flatnonzero(near)[np.argmin(near_x[near])]
        self.pick, self.score = near_x[at], near_u[at]
        self.choice = None
        self.level_counts, self.num_bounded = None, 0
        if search._searched:
            self.level_counts = sum(s.level_counts for s in summaries.values())
            if search._bounds:
                self.num_bounded = int(self.level_counts[1:].sum())
        self.rows = search._utility.rows + sum(bound.rows for bound, _ in search._bounds)
        self._asked = None

    def top(self, k):
        return self._top_x[:k], self._top_u[:k]

    def _ask(self, floor):
        if self._asked is None or self._asked[0] != floor:
            search = self._search
            answers = search._points.ask(self.chunks, _at_least, floor, len(search._refine),
                                         _noise.MAX_CONTENDERS)
            self._asked = floor, answers
        return self._asked[1]

    def count_at_least(self, floor):
        answers = self._ask(floor)
        return sum(a[0] for a in answers), sum(a[1] for a in answers)

    def at_least(self, floor):
        answers = self._ask(floor)
        x = np.concatenate([a[2] for a in answers])
        u = np.concatenate([a[3] for a in answers])
        order = np.argsort(x)
        return x[order], u[order]

    def choose(self, x, utility):
        self.pick, self.score = x, utility
        self.choice = (x, utility)


class _ChunkState:
    """One chunk's part of the driver's per-point state (module docstring). Tasks copy
    what they change: a state is never changed in place.

    Attributes
    ----------
    start : int
        The chunk's first pool index.
    cond_entropy_n : ndarray of float64
    available_n : ndarray of bool
        Candidates not yet picked.
    upper_gain_n : ndarray of float64
        Each candidate's last-gain bound (inf: unknown).
    utilities_t_n : ndarray of shape (steps, n) or None
    xs_s : ndarray of intp
        The step's candidates (chunk indices, ascending).
    at : list of _Level
        The step's search: its candidates at each of ``_search.BranchAndBound``'s levels
        (how far each was refined; ``num_levels``: scored), with their bounds (utilities
        once scored), in the search's order. A task refines a prefix of one level's order
        into the next level, so the levels it leaves alone are shared with the state
        before it, the one it refines loses a prefix (a view), and its work and memory
        grow with the candidates it refines and the next level's, not with the chunk.
    summary : _Summary
    """

    def __init__(self, start, cond_entropy_n, problems, row_sum_range):
        self.start, self.cond_entropy_n = start, cond_entropy_n
        self.problems, self.row_sum_range = problems, row_sum_range
        self.available_n = self.upper_gain_n = self.utilities_t_n = None
        self.xs_s = self.at = self.num_levels = None
        self.summary = None

    def copy(self, *names):
        """A new state sharing every array but those named, which are copies."""
        new = copy.copy(self)
        for name in names:
            setattr(new, name, getattr(self, name).copy())
        return new


class _Level:
    """Candidates in the search's order (higher bounds first, then lower indices): their
    negated bounds (ascending, so that keys are found by bisection), pool indices,
    positions in the step's candidates and, once scored, their utilities' rounding."""

    def __init__(self, neg_bound, index, pos, slack):
        self.neg_bound, self.index, self.pos, self.slack = neg_bound, index, pos, slack

    @classmethod
    def of(cls, bound, index, pos, slack):
        return cls._sorted(-bound, index, pos, slack)

    @classmethod
    def _sorted(cls, neg_bound, index, pos, slack):
        """The search's order of these candidates."""
        order = np.lexsort((index, neg_bound))
        return cls(neg_bound[order], index[order], pos[order], slack[order])

    def __len__(self):
        return len(self.index)

    def __getitem__(self, where):
        """The candidates of a slice of the order (views)."""
        return _Level(self.neg_bound[where], self.index[where], self.pos[where],
                      self.slack[where])

    def merge(self, other):
        """Both levels' candidates together, in order: a merge of the two orders (they
        share no candidate), not a sort of all, whose time grew with the next level at
        every task (docs/workloads.md)."""
        if not len(self) or not len(other):
            return other if len(other) else self
        # Each of other's candidates goes after self's that come before it.
        before = np.searchsorted(self.neg_bound, other.neg_bound, "left")
        after_ties = np.searchsorted(self.neg_bound, other.neg_bound, "right")
        for j in np.flatnonzero(after_ties > before):  # equal bounds: by index
            before[j] += np.searchsorted(self.index[before[j]:after_ties[j]], other.index[j])
        at = before + np.arange(len(other))
        kept = np.ones(len(self) + len(other), dtype=bool)
        kept[at] = False
        fields = []
        for name in ("neg_bound", "index", "pos", "slack"):
            mine, theirs = getattr(self, name), getattr(other, name)
            merged = np.empty(len(kept), dtype=np.result_type(mine, theirs))
            merged[at], merged[kept] = theirs, mine
            fields.append(merged)
        return _Level(*fields)

    def upto(self, key):
        """How many come at or before ``key`` (bound, index)."""
        lo = np.searchsorted(self.neg_bound, -key[0], "left")
        hi = np.searchsorted(self.neg_bound, -key[0], "right")
        return int(lo + np.searchsorted(self.index[lo:hi], key[1], "right"))

    def holds(self, key):
        """Whether ``key`` (or None) is one of them."""
        if key is None:
            return False
        j = self.upto(key)
        return j > 0 and self.neg_bound[j - 1] == -key[0] and self.index[j - 1] == key[1]

    def count_at_least(self, floor):
        """How many have a bound at least ``floor``."""
        return int(np.searchsorted(self.neg_bound, -floor, "right"))


class _Summary:
    """What the merge needs of a chunk after a task.

    Attributes
    ----------
    num_scored : int
    top_u, top_x : ndarray
        Its two best utilities and their pool indices, best first (ties: lowest index).
    near_u, near_x : ndarray
        Its utilities within the tie tolerance of its best, and their indices.
    listed : list of (bound_e, index_e, count_e)
        Per level, a sketch of its best bounds (the first ``want`` in the search's order):
        at most ``most`` of them, its best first, with their ranks counted from 1.
    num_at, num_inf : list of int
        Per level, its candidates there and those without a bound.
    level_counts : ndarray of int
    """

    def __init__(self, state, levels, wants, most, tie_tolerance):
        scored = state.at[levels]
        self.num_scored = len(scored)
        self.top_u, self.top_x = -scored.neg_bound[:2], scored.index[:2]
        near = scored.count_at_least(-scored.neg_bound[0] - tie_tolerance) if len(scored) else 0
        self.near_u, self.near_x = -scored.neg_bound[:near], scored.index[:near]
        self.level_counts = np.array([len(at) for at in state.at])
        self.listed, self.num_at, self.num_inf = [], [], []
        for level, want in enumerate(wants):
            at = state.at[level]
            ranks = _ranks(min(want, len(at)), most)
            self.listed.append((-at.neg_bound[ranks], at.index[ranks], ranks + 1))
            self.num_at.append(len(at))
            self.num_inf.append(at.count_at_least(np.inf))


def _position(bound_k, index_k, bound_q, index_q, side):
    """For each query key, how many of the sorted keys come before it (``side="left"``)
    or are not after it (``"right"``)."""
    n = len(bound_k)
    query = np.concatenate([np.zeros(n, dtype=bool), np.ones(len(bound_q), dtype=bool)])
    order = np.lexsort((query if side == "right" else ~query,
                        np.concatenate([index_k, index_q]), -np.concatenate([bound_k, bound_q])))
    is_known = (~query[order]).astype(np.intp)
    known_before = np.cumsum(is_known) - is_known
    out = np.empty(len(bound_q), dtype=np.intp)
    out[order[query[order]] - n] = known_before[query[order]]
    return out


def _ranks(n, most):
    """At most ``most`` ranks of n sorted values, evenly spread, the first and last
    included."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(np.intp))


def _first_pass(block_n_K_C, start, log_probs, backend, num_threads):
    """A chunk's probabilities (None if it has problems) and its first state."""
    problems = _validation.probs_problems(block_n_K_C, start, log_probs=log_probs)
    if problems:
        return None, _ChunkState(start, None, problems, None)
    probs_n_K_C = _validation.as_probabilities(block_n_K_C, log_probs=log_probs)
    cond_entropy_n, row_sum_range = _pool.point_stats(_task_kernels(backend, num_threads),
                                                      probs_n_K_C)
    return probs_n_K_C, _ChunkState(start, cond_entropy_n, problems, row_sum_range)


def _header(state):
    return state.problems, state.row_sum_range


def _cond_entropy_at(state, x):
    return state.cond_entropy_n[x]


def _summary_of(state):
    return state.summary


def _apply(state, ops):
    """The state after the driver's operations since the chunk's last task."""
    for op, *args in ops:
        if op == "points":
            xs, steps = args
            state = state.copy()
            state.available_n = np.zeros(len(state.cond_entropy_n), dtype=bool)
            state.available_n[slice(None) if xs is None else xs] = True
            state.upper_gain_n = np.empty(len(state.cond_entropy_n))
            if steps is not None:
                state.utilities_t_n = np.full((steps, len(state.cond_entropy_n)), np.nan)
        elif op == "take":
            state = state.copy("available_n")
            state.available_n[args[0]] = False
        elif op == "reset":
            state = state.copy("upper_gain_n")
            state.upper_gain_n[:] = np.inf
        else:  # "gains" or "utilities": of the candidates the step scored
            *args, pick = args
            scored = state.at[state.num_levels]
            xs, utility_s = state.xs_s[scored.pos], -scored.neg_bound
            if pick is not None:
                utility_s = np.where(xs == pick[0], pick[1], utility_s)
            if op == "gains":
                error_bound, score = args
                state = state.copy("upper_gain_n")
                state.upper_gain_n[xs] = utility_s + 2 * scored.slack + error_bound - score
            else:
                state = state.copy("utilities_t_n")
                state.utilities_t_n[args[0], xs] = utility_s
    return state


def _begin(state, ops, base, levels, wants, most, tie_tolerance):
    """A step's search over the chunk's candidates: each starts at ``base`` plus its last
    gain (unbounded when ``base`` is None)."""
    state = _apply(state, ops).copy()
    state.xs_s = np.flatnonzero(state.available_n)
    bound_s = np.full(len(state.xs_s), np.inf) if base is None else \
        np.array(base + state.upper_gain_n[state.xs_s], dtype=np.float64)
    order = np.argsort(-bound_s, kind="stable")  # ties: lower indices first
    state.at = [_Level(-bound_s[order], state.start + state.xs_s[order], order,
                       np.zeros(len(order)))]
    state.at += [state.at[0][:0] for _ in range(levels)]
    state.num_levels = levels
    state.summary = _Summary(state, levels, wants, most, tie_tolerance)
    return state


def _refine(state, ops, probs_n_K_C, level, levels, cut, joint, constants, backend,
            num_threads, wants, most, tie_tolerance):
    """The chunk's part of a tile: its candidates at ``level`` whose (bound, index) is at
    least ``cut`` in the search's order, refined (scored at the last level)."""
    state = _apply(state, ops).copy()
    state.at = list(state.at)
    at = state.at[level]
    n = at.upto(cut)
    chosen, state.at[level] = at[:n], at[n:]
    order = np.argsort(chosen.pos)  # scored in the chunk's order
    pos_n, bound_n = chosen.pos[order], -chosen.neg_bound[order]
    xs = state.xs_s[pos_n]
    joint_entropy_n, offset_n = _pool.joint_entropy(_task_kernels(backend, num_threads),
                                                    probs_n_K_C, *joint, xs)
    value_n, slack = _search.utilities(joint_entropy_n, offset_n, state.cond_entropy_n[xs],
                                       *constants)
    if level == levels - 1:
        bound_n, slack_n = value_n, slack
    else:  # the bound's rounding, and the rounding of the utility it bounds
        bound_n, slack_n = np.minimum(bound_n, value_n + 2 * slack), np.zeros(n)
    state.at[level + 1] = state.at[level + 1].merge(
        _Level.of(bound_n, state.start + xs, pos_n, slack_n))
    state.summary = _Summary(state, levels, wants, most, tie_tolerance)
    return state


def _window(state, level, after, upto, most):
    """Of the chunk's candidates at ``level``: how many come at or before ``after`` (None:
    none), whether ``after`` is one of them; a sketch of those after it up to ``upto``
    (their bounds, indices and counts up to each, at most ``most``), how many those are,
    and whether ``upto`` is one of them."""
    at = state.at[level]
    before = 0 if after is None else at.upto(after)
    inside = max(0, at.upto(upto) - before)
    ranks = before + _ranks(inside, most)
    return (before, at.holds(after), -at.neg_bound[ranks], at.index[ranks], ranks + 1,
            inside, at.holds(upto))


def _at_least(state, floor, levels, most):
    """Of the chunk's step: its scored candidates with a utility at least ``floor`` (their
    indices and utilities while there are at most ``most``), and its unscored ones with a
    bound at least that."""
    scored = state.at[levels]
    n = scored.count_at_least(floor)
    unscored = sum(state.at[level].count_at_least(floor) for level in range(levels))
    listed = slice(0, 0 if n > most else n)
    return n, unscored, scored.index[listed], -scored.neg_bound[listed]


def _utilities(state, ops):
    return _apply(state, ops).utilities_t_n


def _task_kernels(backend, num_threads):
    """The kernels a task runs: the client's backend, the pool's threads per task."""
    return _backend.Kernels(_backend.get_kernels(backend), num_threads)


def _same(state):
    return state

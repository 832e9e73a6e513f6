"""BatchBALD on a pool held by Dask: chunks on a cluster's workers, or read from disk.

``batchbald`` takes a ``dask.array.Array`` (or a ``zarr.Array``) of shape (N, K, C) and
runs the same greedy driver as for an in-memory pool, on the client; only the pool's
answers come from elsewhere. A :class:`DaskPool` asks one task per chunk that holds a
candidate the driver names (the same kernels as in memory, on the chunk's rows), and merges
their answers on the client; a chunk with no candidate in a call gets no task and is not
read. Picks and scores therefore equal the in-memory call's on the same values.

Where things live:

- the pool, in its chunks along N: in the workers' memory when a ``distributed.Client`` is
  active (persisted after the first pass: every driver call reads the chunks it touches
  again, and rereading a compressed zarr chunk costs more than scoring its candidates), else
  read from its source at every task (Dask's local scheduler: a memmap or a zarr store stays
  on disk);
- on the client, O(N) numbers: each point's conditional entropy (computed by the first
  pass) and the driver's last-gain bounds and bookkeeping, with their temporaries ~140 bytes
  a point at the peak of a step (W8, N = 2,000,000: a client's peak RSS of ~430 MiB, 160 MiB
  of it imports). Keeping them there makes bounding and merging plain array operations and
  costs no task per step; the client bounds the pool at some 10^7 points per GiB;
- the joint state of a step (M × K, at most a few MiB): sent to the workers once per state
  (a persisted task) and reused by every task of that state.
"""

import os

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:  # an optional extra
    raise ImportError("pools on Dask need dask[array] (and distributed for a cluster): "
                      "pip install 'batchbald_fast[dask]'") from exc

from . import _backend, _pool, _validation

# Joint states whose broadcast copies are kept: the driver alternates between a step's
# coarse and full joints.
STATES_KEPT = 4


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
    shape, dtype, cond_entropy_N, row_sum_range
        As ``_pool.ArrayPool``.
    calls : list of (int, ndarray)
        For each ``joint_entropy`` call, the number of candidates and the chunks it ran a
        task on.
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
        self._states = []

        # The first pass: every chunk validated, its probabilities and statistics made.
        blocks = probs_N_K_C.to_delayed().ravel()
        parts = [dask.delayed(_first_pass, nout=2)(block, start, log_probs, self._backend,
                                                   self._num_threads)
                 for block, start in zip(blocks, self._starts)]
        if _active_client() is not None if persist is None else persist:
            parts = dask.persist(*parts)
            self._chunks = dask.persist(*(part[0] for part in parts))
        else:
            self._chunks = [dask.delayed(_validation.as_probabilities)(block,
                                                                       log_probs=log_probs)
                            for block in blocks]
        stats = dask.compute(*(part[1] for part in parts))
        _validation.raise_first_problem(problems for problems, _, _ in stats)
        self.cond_entropy_N = np.concatenate([cond_entropy_n for _, cond_entropy_n, _ in stats])
        self.row_sum_range = (min(low for _, _, (low, _) in stats),
                              max(high for _, _, (_, high) in stats))

    def rows(self, xs):
        """``probs_N_K_C[xs]``, float64, shape (len(xs), K, C): one task per chunk."""
        xs = np.asarray(xs, dtype=np.intp)
        out = np.empty((len(xs),) + self.shape[1:])
        groups = self._groups(xs)
        for (_, at), rows_n_K_C in zip(groups, self._run(_chunk_rows, xs, groups)):
            out[at] = rows_n_K_C
        return out

    def joint_entropy(self, joint_M_K, weights_M, offset_K, xs):
        """As ``_pool.ArrayPool.joint_entropy``: one task per chunk holding a candidate."""
        state = self._broadcast(joint_M_K, weights_M, offset_K)
        groups = self._groups(xs)
        self.calls.append((len(xs), np.array([chunk for chunk, _ in groups], dtype=np.intp)))
        weighted_n, offset_n = np.empty(len(xs)), np.empty(len(xs))
        for (_, at), (weighted, offset) in zip(groups, self._run(
                _chunk_joint_entropy, xs, groups, state, self._backend, self._num_threads)):
            weighted_n[at], offset_n[at] = weighted, offset
        return weighted_n, offset_n

    def _groups(self, xs):
        """``(chunk, positions in xs)`` of every chunk holding some of xs."""
        chunk_n = np.searchsorted(self._starts, xs, side="right") - 1
        order = np.argsort(chunk_n, kind="stable")
        chunks, first = np.unique(chunk_n[order], return_index=True)
        return list(zip(chunks.tolist(), np.split(order, first[1:])))

    def _run(self, function, xs, groups, *args):
        """``function(chunk, chunk-local indices, *args)`` on each group's chunk, in order."""
        return dask.compute(*(
            dask.delayed(function)(self._chunks[chunk],
                                   _compact(xs[at] - self._starts[chunk]), *args)
            for chunk, at in groups))

    def _broadcast(self, joint_M_K, weights_M, offset_K):
        """The state as tasks receive it, made once per state (tracked by identity: the
        driver passes the same arrays while the state lasts).

        On a cluster it is a task holding the arrays, persisted: workers fetch it once, and
        the scheduler can make it again if its worker dies (scattered data it could not).
        """
        state = (joint_M_K, weights_M, offset_K)
        for kept, handle in self._states:
            if all(a is b for a, b in zip(kept, state)):
                return handle
        handle, = dask.persist(dask.delayed(_same)(state))
        self._states = [(state, handle)] + self._states[:STATES_KEPT - 1]
        return handle


def _task_kernels(backend, num_threads):
    """The kernels a task runs: the client's backend, the pool's threads per task."""
    return _backend.Kernels(_backend.get_kernels(backend), num_threads)


def _first_pass(block_n_K_C, start, log_probs, backend, num_threads):
    """A chunk's problems, then (if none) its probabilities and their statistics."""
    problems = _validation.probs_problems(block_n_K_C, start, log_probs=log_probs)
    if problems:
        return None, (problems, None, None)
    probs_n_K_C = _validation.as_probabilities(block_n_K_C, log_probs=log_probs)
    cond_entropy_n, row_sum_range = _pool.point_stats(_task_kernels(backend, num_threads),
                                                      probs_n_K_C)
    return probs_n_K_C, (problems, cond_entropy_n, row_sum_range)


def _compact(xs):
    """Indices as tasks receive them: a run of consecutive ones (every point of a chunk, at
    the first step) as a range, so that graphs stay small whatever the pool."""
    if len(xs) > 1 and (np.diff(xs) == 1).all():
        return range(xs[0], xs[-1] + 1)
    return xs


def _expand(xs):
    return np.arange(xs.start, xs.stop) if isinstance(xs, range) else xs


def _same(state):
    return state


def _chunk_rows(probs_n_K_C, xs):
    return _pool.rows(probs_n_K_C, _expand(xs))


def _chunk_joint_entropy(probs_n_K_C, xs, state, backend, num_threads):
    return _pool.joint_entropy(_task_kernels(backend, num_threads), probs_n_K_C, *state,
                               _expand(xs))

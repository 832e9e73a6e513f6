"""Pools on Dask: chunk by chunk, on a real cluster or out of core, the in-memory answers."""

import collections
import json
import os
import re
import signal
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

import dask  # noqa: E402

import batchbald_fast as bf  # noqa: E402
from batchbald_fast import _backend  # noqa: E402
from batchbald_fast import dask as bf_dask  # noqa: E402
from batchbald_fast._result import STEP_FIELD_NAMES  # noqa: E402
from batchbald_fast._workloads import make_probs  # noqa: E402
from batchbald_fast.cli import main  # noqa: E402
from conftest import random_probs  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, started once for the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local_cluster, \
            distributed.Client(local_cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def client(cluster):
    """The cluster's client, active for one test (the others run on Dask's local scheduler)."""
    cluster.wait_for_workers(2)
    with cluster.as_current():
        yield cluster


def assert_same(result, expected):
    """Every field of the in-memory call's result: its picks, and the same candidates
    scored and bounded at every step (the search takes the same tiles in the same order);
    the kernels run on the same rows, so floats may differ by rounding only."""
    for name in STEP_FIELD_NAMES:
        got, want = getattr(result, name), getattr(expected, name)
        if want.dtype == np.float64:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    if expected.utilities is None:
        assert result.utilities is None
    else:
        assert isinstance(result.utilities, da.Array)  # left on the workers
        np.testing.assert_allclose(result.utilities.compute(), expected.utilities, rtol=0,
                                   atol=1e-12)


def by_bald(values):
    return values[np.argsort(-bf.bald(values), kind="stable")]


CASES = {
    # exact steps, then pruned and sampled ones; exact zeros and ones in the pool
    "exact-then-sampled": (lambda: random_probs(np.random.default_rng(0), 300, 5, 3,
                                                zeros=True), 70, {"batch_size": 6,
                                                                  "num_samples": 30}),
    "float32-log-probs": (lambda: np.log(make_probs(300, 6, 4, seed=1)).astype(np.float32),
                          64, {"batch_size": 5, "num_samples": 40, "log_probs": True}),
    "candidates-utilities": (lambda: make_probs(250, 4, 3, seed=2), 60, {
        "batch_size": 5, "num_samples": 20, "return_utilities": True,
        "candidates": np.random.default_rng(2).permutation(250)[:90]}),
    "float32-compute": (lambda: make_probs(300, 6, 3, seed=3), 100, {
        "batch_size": 5, "num_samples": 50, "dtype": np.float32}),
    # big enough for coarse joints: the branch and bound calls on growing tiles
    "coarse-bounds": (lambda: make_probs(4200, 8, 4, seed=4), 700, {
        "batch_size": 7, "num_samples": 1500, "tol": 0.0}),
    # the best candidates all in the first chunks: their sketches of bounds stop short of
    # a tile, and they are asked for more before it is cut
    "best-in-few-chunks": (lambda: by_bald(make_probs(4200, 8, 4, seed=4)), 300, {
        "batch_size": 7, "num_samples": 1500, "tol": 0.0}),
    # many chunks, each sketching a small share of a tile
    "many-chunks-lazy": (lambda: make_probs(3000, 8, 4, seed=9), 97, {
        "batch_size": 6, "num_samples": 1200, "tol": 0.0, "lazy": True}),
    # exact duplicates across chunks: ties go to the lowest index, as in memory
    "duplicates": (lambda: make_probs(60, 5, 3, seed=10)[
        np.random.default_rng(10).integers(0, 60, 500)], 37, {"batch_size": 6,
                                                              "num_samples": 200}),
}


@pytest.mark.parametrize("case", CASES)
def test_same_as_in_memory_on_a_cluster(backend, client, case):
    make, chunk, kwargs = CASES[case]
    values = make()
    expected = bf.batchbald(values, random_state=0, **kwargs)
    result = bf.batchbald(da.from_array(values, chunks=(chunk, 2, -1)), random_state=0,
                          **kwargs)
    assert_same(result, expected)
    if case == "coarse-bounds":
        assert (result.bound_rows > 0).any() and result.mode[-1] == "sampled"


@pytest.mark.parametrize("case", ["coarse-bounds", "best-in-few-chunks",
                                  "many-chunks-lazy", "duplicates"])
def test_sketches_of_a_few_keys_cut_the_same_tiles(backend, client, case, monkeypatch):
    """With 3 keys per level in a chunk's sketch, each tile's cut is found by asking the
    chunks about windows of keys, and the search still takes the same tiles."""
    monkeypatch.setattr(bf_dask, "SKETCH", 3)
    windows = []
    of_window = bf_dask._Known.of_window
    monkeypatch.setattr(bf_dask._Known, "of_window",
                        classmethod(lambda cls, *a: windows.append(a) or of_window(*a)))
    make, chunk, kwargs = CASES[case]
    values = make()
    expected = bf.batchbald(values, random_state=0, **kwargs)
    result = bf.batchbald(da.from_array(values, chunks=(chunk, 2, -1)), random_state=0,
                          **kwargs)
    assert_same(result, expected)
    assert windows  # the window path ran
    # A sketch lists at most 3 keys; a window's answer is at most 3 of them too.
    assert max(len(answer[4]) for answer in windows) <= 3


def not_after(bound_n, index_n, key):
    """How many keys (bound, index) are at or before ``key`` in the search's order (higher
    bounds first, then lower indices), by brute force."""
    return int(np.count_nonzero((bound_n > key[0]) | ((bound_n == key[0])
                                                     & (index_n <= key[1]))))


def test_level_finds_keys_by_bisection_as_brute_force_counts():
    """A chunk's candidates at one level, in the search's order: how many come at or
    before a key, whether the key is one of them, how many have a bound at least a floor,
    against brute force (ties of bounds and infinite bounds included)."""
    rng = np.random.default_rng(13)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        index_n = rng.choice(1000, n, replace=False)
        bound_n = rng.integers(0, 4, n).astype(float)
        bound_n[rng.random(n) < 0.2] = np.inf
        cut = int(rng.integers(0, n + 1))  # two levels merged: the same as one of all
        level = bf_dask._Level.of(bound_n[:cut], index_n[:cut], np.arange(cut), np.zeros(cut))
        level = level.merge(bf_dask._Level.of(bound_n[cut:], index_n[cut:],
                                              np.arange(cut, n), np.arange(cut, n) * 0.5))
        assert len(level) == n
        np.testing.assert_array_equal(level.slack, np.where(level.pos < cut, 0, level.pos * 0.5))
        keys = [(b, i) for b, i in zip(bound_n, index_n)] + \
            [(float(rng.integers(-1, 5)), int(rng.integers(0, 1000))) for _ in range(10)] + \
            [(np.inf, int(rng.integers(0, 1000)))]
        for key in keys:
            assert level.upto(key) == not_after(bound_n, index_n, key)
            assert level.holds(key) == bool(((bound_n == key[0]) & (index_n == key[1])).any())
            assert level.count_at_least(key[0]) == np.count_nonzero(bound_n >= key[0])
        assert not level.holds(None)
        # the order itself: higher bounds first, then lower indices
        expected = np.lexsort((index_n, -bound_n))
        np.testing.assert_array_equal(level.index, index_n[expected])
        np.testing.assert_array_equal(-level.neg_bound, bound_n[expected])


def test_all_chunks_counted_at_once_bracket_the_true_counts():
    """The candidates of all chunks up to each key, counted from their sketches in one
    sort: the least and most bracket the exact count (brute force over the candidates)."""
    rng = np.random.default_rng(12)
    N = 5000
    for _ in range(100):
        knowns, bounds, indices = [], [], []
        for _ in range(rng.integers(1, 9)):
            n = int(rng.integers(0, 60))
            index_n = rng.choice(N, n, replace=False)
            bound_n = rng.integers(0, 5, n).astype(float)
            bound_n[rng.random(n) < 0.1] = np.inf
            order = np.lexsort((index_n, -bound_n))
            bound_n, index_n = bound_n[order], index_n[order]
            ranks = bf_dask._ranks(n, int(rng.integers(1, 10)))
            knowns.append(bf_dask._Known.of_sketch(bound_n[ranks], index_n[ranks], ranks + 1,
                                                   n, N))
            bounds.append(bound_n)
            indices.append(index_n)
        # queries: keys of the sketches themselves (as the search asks) and others
        bound_q = np.concatenate([k.bound[1:-1] for k in knowns]
                                 + [rng.integers(-1, 6, 20).astype(float)])
        index_q = np.concatenate([k.index[1:-1] for k in knowns] + [rng.integers(0, N, 20)])
        low_q, high_q = bf_dask._Known.total_counts(knowns, bound_q, index_q)
        bound_n, index_n = np.concatenate(bounds), np.concatenate(indices)
        exact_q = [not_after(bound_n, index_n, key) for key in zip(bound_q, index_q)]
        assert (low_q <= exact_q).all() and (exact_q <= high_q).all()
        # and as tight as each chunk's own sketch: its counts, summed
        np.testing.assert_array_equal([low_q, high_q], np.sum(
            [k.counts(bound_q, index_q) for k in knowns], axis=0))


def test_a_call_keeps_a_bounded_number_of_tasks_on_the_cluster(backend, client):
    """Between steps the cluster holds the results of a few tasks per chunk (the chunks,
    their first and current states, the joints kept), however many steps ran (the
    states before are released, their tasks kept as lineage); after the call, none."""
    values = make_probs(3000, 8, 4, seed=9)
    chunks = 30
    held = []

    def in_memory(dask_scheduler):
        return sum(task.state == "memory" for task in dask_scheduler.tasks.values())

    def tasks_on_the_scheduler():
        return client.run_on_scheduler(in_memory)

    bound = 3 * chunks + bf_dask.STATES_KEPT + 2

    def settled():
        # The client's releases reach the scheduler in its own time: one still on its way
        # when a step ends is counted unless the count gets a moment to settle.
        for _ in range(50):
            count = tasks_on_the_scheduler()
            if count <= bound:
                break
            time.sleep(0.02)
        return count

    result = bf.batchbald(da.from_array(values, chunks=(100, 8, 4)), 8, num_samples=1200,
                          tol=0.0, random_state=0, progress=lambda *_: held.append(settled()))
    assert_same(result, bf.batchbald(values, 8, num_samples=1200, tol=0.0, random_state=0))
    assert len(held) == 8 and max(held) <= bound
    del result
    for _ in range(100):  # the client's releases reach the scheduler in its own time
        if tasks_on_the_scheduler() == 0:
            break
        time.sleep(0.1)
    assert tasks_on_the_scheduler() == 0


def test_workers_run_the_clients_backend_not_their_environment(backend, client):
    values = make_probs(200, 5, 3, seed=5)
    client.run(os.environ.__setitem__, _backend.ENV_VAR, "no-such-backend")
    try:
        result = bf.batchbald(da.from_array(values, chunks=50), 4, num_samples=10,
                              random_state=0)
    finally:
        client.run(os.environ.pop, _backend.ENV_VAR)
    assert_same(result, bf.batchbald(values, 4, num_samples=10, random_state=0))


def test_worker_killed_inside_a_kernel_call_is_recomputed(backend, client):
    """A worker dies in the middle of a chunk's task, in a kernel call: Dask recomputes
    the chunks and the chunk states it held from their lineage, and the call goes on."""
    values = make_probs(2000, 6, 3, seed=6)
    expected = bf.batchbald(values, 5, num_samples=50, random_state=0)
    pids = client.run(os.getpid)
    victim = min(pids)

    def die_in_the_third_kernel_call(backend):
        module = _backend.get_kernels(backend)
        score_candidates, calls = module.score_candidates, []

        def dying(*args, **kwargs):
            calls.append(None)
            if len(calls) == 3:  # after the first pass, while a step scores its chunk
                os.kill(os.getpid(), signal.SIGKILL)
            return score_candidates(*args, **kwargs)

        module.score_candidates = dying

    client.run(die_in_the_third_kernel_call, backend, workers=[victim])
    progress = []
    result = bf.batchbald(da.from_array(values, chunks=250), 5, num_samples=50,
                          random_state=0, progress=lambda *done: progress.append(done))
    assert_same(result, expected)
    assert progress == [(t, 5) for t in range(1, 6)]
    client.wait_for_workers(2)
    now = set(client.run(os.getpid).values())
    assert pids[victim] not in now and pids[max(pids)] in now  # the victim's nanny made a new one


def bad(values, *changes):
    values = values.copy()
    for index, value in changes:
        values[index] = value
    return values


@pytest.mark.parametrize("changes, log_probs", [
    ([((377, 2, 1), np.nan)], False),
    # nan outranks a negative in an earlier chunk, as it does in the whole array
    ([((30, 0, 0), -0.5), ((390, 1, 2), np.nan)], False),
    ([((399, 3, 0), 0.7)], False),
    ([((305, 1, 1), 0.25)], True),
])
def test_bad_input_in_a_late_chunk_gives_the_in_memory_error(client, changes, log_probs):
    values = random_probs(np.random.default_rng(7), 400, 4, 3)
    values = bad(np.log(values) if log_probs else values, *changes)
    with pytest.raises(ValueError) as in_memory:
        bf.batchbald(values, 2, log_probs=log_probs)
    with pytest.raises(ValueError, match=re.escape(str(in_memory.value))):
        bf.batchbald(da.from_array(values, chunks=100), 2, log_probs=log_probs)


def test_per_point_scores_read_a_dask_pool_and_check_it(backend):
    values = make_probs(50, 4, 3, seed=14)
    np.testing.assert_array_equal(bf.bald(da.from_array(values, chunks=20)), bf.bald(values))
    with pytest.raises(ValueError, match=r"nan, first at index \(45, 1, 2\)"):
        bf.conditional_entropy(da.from_array(bad(values, ((45, 1, 2), np.nan)), chunks=20))


def test_unknown_chunk_sizes_are_refused_before_any_work():
    values = da.from_array(make_probs(6, 2, 2, seed=15), chunks=2)
    with pytest.raises(ValueError, match=r"known shape.*compute_chunk_sizes"):
        bf.batchbald(values[values[:, 0, 0] > 0.5], 2)


def test_chunks_without_candidates_are_never_read(backend):
    values = make_probs(600, 5, 3, seed=8)
    reads = collections.Counter()

    def read(i):
        reads[i] += 1
        return values[100 * i:100 * (i + 1)]

    pool = da.concatenate([da.from_delayed(dask.delayed(read)(i), (100, 5, 3), values.dtype)
                           for i in range(6)])
    candidates = np.r_[120:180, 430:470]  # chunks 1 and 4
    result = bf.batchbald(pool, 4, num_samples=20, candidates=candidates, random_state=0)
    assert_same(result, bf.batchbald(values, 4, num_samples=20, candidates=candidates,
                                     random_state=0))
    assert reads[1] > 1 and reads[4] > 1
    assert [reads[i] for i in (0, 2, 3, 5)] == [1] * 4  # the first pass only


def write_zarr(path, values, chunk):
    store = zarr.open(str(path), mode="w", shape=values.shape, chunks=(chunk,) + values.shape[1:],
                      dtype=values.dtype)
    store[:] = values
    return store


def test_zarr_pool_locally_and_on_a_cluster(backend, tmp_path, cluster):
    values = make_probs(400, 5, 3, seed=11).astype(np.float32)
    store = write_zarr(tmp_path / "pool.zarr", values, 90)
    expected = bf.batchbald(values, 5, num_samples=30, random_state=0)
    assert_same(bf.batchbald(store, 5, num_samples=30, random_state=0), expected)
    with cluster.as_current():
        assert_same(bf.batchbald(da.from_zarr(str(tmp_path / "pool.zarr")), 5, num_samples=30,
                                 random_state=0), expected)


def test_ensemble_probas_of_dask_features_is_a_lazy_pool(backend):
    rng = np.random.default_rng(12)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    forest = RandomForestClassifier(n_estimators=6, random_state=0).fit(X[:60], y[:60])
    members = [LogisticRegression().fit(X[:40], y[:40]), LogisticRegression().fit(X[20:80],
                                                                                  y[20:80])]
    X_dask = da.from_array(X, chunks=(70, 2))
    for ensemble in (forest, members):
        lazy = bf.ensemble_probas(ensemble, X_dask)
        assert isinstance(lazy, da.Array) and lazy.chunks[0] == X_dask.chunks[0]
        in_memory = bf.ensemble_probas(ensemble, X)
        np.testing.assert_array_equal(lazy.compute(), in_memory)
        assert_same(bf.batchbald(lazy, 4, num_samples=30, random_state=0),
                    bf.batchbald(in_memory, 4, num_samples=30, random_state=0))


def test_cli_reads_zarr_stores_and_runs_on_a_scheduler(backend, tmp_path, cluster, capsys):
    values = make_probs(300, 5, 3, seed=13)
    np.save(tmp_path / "knc.npy", values.transpose(1, 0, 2))
    write_zarr(tmp_path / "pool.zarr", values, 80)
    expected = bf.batchbald(values, 4, num_samples=20, random_state=1).indices.tolist()
    for argv in ([str(tmp_path / "pool.zarr")],
                 [str(tmp_path / "pool.zarr"), "--scheduler", cluster.scheduler.address],
                 [str(tmp_path / "knc.npy"), "--layout", "KNC",
                  "--scheduler", cluster.scheduler.address]):
        assert main(["select", *argv, "--batch-size", "4", "--num-samples", "20",
                     "--seed", "1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["indices"] == expected

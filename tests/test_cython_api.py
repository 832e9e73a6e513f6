"""The public Cython API: an extension built against the package cimports
``batchbald_fast.cython_api`` and gets the Python API's numbers."""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest

import batchbald_fast as bf
from batchbald_fast import _backend
from conftest import random_probs

# CI's compiled run sets this: there a missing Cython or compiler is a failure, not a skip.
REQUIRED = os.environ.get("BATCHBALD_FAST_REQUIRE_COMPILED") == "1"

EMBEDDER_PYX = textwrap.dedent('''\
    # cython: language_level=3, boundscheck=False, wraparound=False
    import numpy as np
    from cython cimport floating
    from numpy cimport intp_t

    from batchbald_fast.cython_api cimport ScorePlan, score_candidates, score_candidates_plan


    def score(const floating[:, ::1] joint_M_K, const double[::1] weights_M,
              const floating[:, :, ::1] probs_N_K_C, const intp_t[::1] candidates,
              int num_threads):
        cdef Py_ssize_t n = candidates.shape[0]
        cdef ScorePlan plan
        with nogil:  # sizing needs no Python
            plan = score_candidates_plan(joint_M_K.shape[0], joint_M_K.shape[1],
                                         probs_N_K_C.shape[2], n, num_threads,
                                         sizeof(floating), 0)
        dtype = np.float64 if floating is double else np.float32
        cdef floating[:, ::1] work = np.empty((plan.num_threads, plan.work_size), dtype)
        cdef double[:, ::1] acc = np.empty((plan.num_threads, plan.acc_size))
        cdef double[::1] out = np.empty(n)
        with nogil:
            score_candidates(joint_M_K, weights_M, probs_N_K_C, candidates, out, plan,
                             work, acc)
        return np.asarray(out), plan.num_threads
    ''')


def _unavailable(reason):
    if REQUIRED:
        pytest.fail(f"{reason}, with BATCHBALD_FAST_REQUIRE_COMPILED=1")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    """The extension above, built with setuptools + cythonize in a temporary directory."""
    if _backend._kernels_compiled is None:
        pytest.skip("compiled extension not built: nothing to cimport at run time")
    if importlib.util.find_spec("Cython") is None or \
            importlib.util.find_spec("setuptools") is None:
        _unavailable("Cython or setuptools not installed")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if os.name == "posix" and shutil.which(cc) is None:
        _unavailable(f"no C compiler ({cc})")
    tmp = tmp_path_factory.mktemp("embedder")
    (tmp / "embedder.pyx").write_text(EMBEDDER_PYX)
    # The directory holding the package (site-packages, or the checkout of an editable
    # install) is where Cython finds batchbald_fast/cython_api.pxd.
    package_parent = str(Path(bf.__file__).resolve().parents[1])
    # -O0: the extension's own code only calls into batchbald_fast._kernels (built
    # optimised); unoptimised, its memoryview boilerplate compiles in a few seconds.
    (tmp / "setup.py").write_text(textwrap.dedent(f'''\
        import numpy
        from Cython.Build import cythonize
        from setuptools import Extension, setup

        ext = Extension("embedder", ["embedder.pyx"],
                        include_dirs=[{package_parent!r}, numpy.get_include()],
                        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
                        extra_compile_args={["-O0"] if os.name == "posix" else []!r})
        setup(ext_modules=cythonize([ext], include_path=[{package_parent!r}]))
        '''))
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                           cwd=tmp, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    spec = importlib.util.spec_from_file_location(
        "embedder", next(tmp.glob("embedder*" + sysconfig.get_config_var("EXT_SUFFIX"))))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def probs_N_K_C():
    return random_probs(np.random.default_rng(4), 300, 6, 4, zeros=True)


def test_empty_batch_scores_the_mean_prediction_entropy(embedder, probs_N_K_C):
    N, K, C = probs_N_K_C.shape
    out, _ = embedder.score(np.full((1, K), 1 / K), np.ones(1), probs_N_K_C,
                            np.arange(N), 2)
    np.testing.assert_allclose(out, bf.entropy(probs_N_K_C), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_second_step_utilities_equal_the_python_api(embedder, probs_N_K_C, dtype, atol):
    N, K, C = probs_N_K_C.shape
    result = bf.batchbald(probs_N_K_C, 2, return_utilities=True)
    a = result.indices[0]
    # The exact joint of {a}: one row per label of a, J[c, k] = p[a, k, c] / K.
    joint_M_K = np.ascontiguousarray(probs_N_K_C[a].T / K, dtype=dtype)
    candidates = np.delete(np.arange(N), a)
    out, _ = embedder.score(joint_M_K, np.ones(C), probs_N_K_C.astype(dtype), candidates, 2)
    cond_entropy_N = bf.conditional_entropy(probs_N_K_C)
    utilities = out - cond_entropy_N[a] - cond_entropy_N[candidates]
    np.testing.assert_allclose(utilities, result.utilities[1, candidates], rtol=0, atol=atol)


def test_same_numbers_on_any_thread_count(embedder, probs_N_K_C):
    N, K, C = probs_N_K_C.shape
    joint_M_K = np.random.default_rng(0).random((50, K)) / K
    candidates = np.random.default_rng(1).permutation(N)[:200]
    outs = []
    for num_threads in (1, 2, 3, 0):  # 0: omp_get_max_threads()
        out, used = embedder.score(joint_M_K, np.ones(50), probs_N_K_C, candidates,
                                   num_threads)
        assert 1 <= used <= max(num_threads, _backend._kernels_compiled.max_threads())
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])

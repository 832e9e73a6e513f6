import importlib.util
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings


from batchbald_fast import _backend, _noise

# CI sets this so that a failed build cannot pass as a run of the NumPy backend alone.
if os.environ.get("BATCHBALD_FAST_REQUIRE_COMPILED") == "1" and (
        _backend._kernels_compiled is None or not _backend._kernels_compiled.OPENMP_ENABLED):
    raise RuntimeError("BATCHBALD_FAST_REQUIRE_COMPILED=1 but batchbald_fast._kernels is "
                       "not built with OpenMP")

# Generated cases (tests/test_generated.py): "ci" is cheap and fixed (the same cases every
# run, no example database), "thorough" is for a local run, selected by
# BATCHBALD_FAST_HYPOTHESIS=thorough.
_HYPOTHESIS = dict(deadline=None, database=None, print_blob=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=150, derandomize=True, **_HYPOTHESIS)
settings.register_profile("thorough", max_examples=2000, **_HYPOTHESIS)
settings.load_profile(os.environ.get("BATCHBALD_FAST_HYPOTHESIS", "ci"))

BACKENDS = ["numpy", pytest.param("cython", marks=pytest.mark.skipif(
    _backend._kernels_compiled is None, reason="compiled extension not built"))]


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees the warnings a fresh process would (they are given once per process)."""
    monkeypatch.setattr(_noise, "_WARNED", set())


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Run the test once per backend, selected the way a user selects it."""
    monkeypatch.setenv(_backend.ENV_VAR, request.param)
    assert _backend.backend_info()["backend"] == request.param
    return request.param


def load_benchmark(name):
    """The module of ``benchmarks/<name>.py`` (benchmarks/ is not a package)."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def al():
    """benchmarks/active_learning.py (torch is imported only by what runs the loop)."""
    return load_benchmark("active_learning")


def random_probs(rng, N, K, C, *, zeros=False, concentration=1.0):
    """Dirichlet probabilities, optionally with exact zeros and ones mixed in."""
    probs_N_K_C = rng.dirichlet(np.full(C, concentration), size=(N, K))
    if zeros and C > 1:
        # Some classes impossible under some members, some points certain under some.
        mask = rng.random((N, K, C)) < 0.2
        mask[..., 0] = False
        probs_N_K_C = np.where(mask, 0.0, probs_N_K_C)
        onehot = rng.random((N, K)) < 0.15
        probs_N_K_C[onehot] = np.eye(C)[rng.integers(C, size=onehot.sum())]
        probs_N_K_C /= probs_N_K_C.sum(axis=2, keepdims=True)
    return probs_N_K_C


def assert_same_result(a, b):
    """Every field of two BatchResults equal (None where either is None)."""
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is y, name
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)

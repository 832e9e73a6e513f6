import pytest

from batchbald_fast._workloads import DEFAULT, WORKLOADS


def pytest_addoption(parser):
    parser.addoption("--workloads", default=",".join(DEFAULT),
                     help=f"comma-separated workloads, or 'all' (default: {','.join(DEFAULT)})")
    parser.addoption("--runners", default="all",
                     help="comma-separated runners (numpy, cython, batchbald_redux, "
                          "scikit-activeml, baal, batchbald_fast.baal), or 'all' installed")
    parser.addoption("--memory", action="store_true",
                     help="also trace the peak memory of each call (an untimed second run)")


def pytest_generate_tests(metafunc):
    if "workload" in metafunc.fixturenames:
        names = metafunc.config.getoption("--workloads")
        names = list(WORKLOADS) if names == "all" else names.split(",")
        metafunc.parametrize("workload", [WORKLOADS[n] for n in names], ids=names)
    if "runner_name" in metafunc.fixturenames:
        from batchbald_fast._workloads import available_runners
        names = metafunc.config.getoption("--runners")
        names = list(available_runners()) if names == "all" else names.split(",")
        metafunc.parametrize("runner_name", names)

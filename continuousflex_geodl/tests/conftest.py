"""Shared pytest set-up: numerics, KeOps cache, the slow/GPU markers, and the
fixtures shared by several test files (``one_thread``, ``one_openmp_thread``).

Slow and GPU-only tests are skipped by default *with a reason* (shown by
``-ra``); run them with ``--runslow`` / on a CUDA machine.
"""
import os

import pytest

from continuousflex_geodl.core.runtime import default_keops_cache

# A fixed, writable KeOps build folder so repeated runs reuse compiled formulas.
os.environ.setdefault('CFGEODL_KEOPS_CACHE', default_keops_cache('keops-tests'))
os.environ.setdefault('KEOPS_CACHE_FOLDER', os.environ['CFGEODL_KEOPS_CACHE'])
os.environ.setdefault('MPLBACKEND', 'Agg')
# OpenMP threads sleep when idle (set before torch loads): spinning threads
# slow the suite many-fold on a shared 2-core machine
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


@pytest.fixture
def one_thread():
    """Torch on one thread during the test (small tensors: faster, and immune to
    busy cores); the previous count is restored.  Use with
    ``pytestmark = pytest.mark.usefixtures('one_thread')``."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_openmp_thread():
    """OpenMP libraries (scikit-learn k-means, t-SNE, BLAS) on one thread:
    spin-waiting on shared cores costs 10-40x; one thread keeps the tests
    fast and deterministic."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api='openmp'):
        yield


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', default=False,
                     help='also run tests marked slow')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long test, skipped unless --runslow')
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU, skipped without one')
    from continuousflex_geodl.core import runtime
    runtime.setup()


def pytest_collection_modifyitems(config, items):
    run_slow = config.getoption('--runslow')
    has_cuda = None
    for item in items:
        if 'slow' in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason='slow test: run with --runslow'))
        if 'gpu' in item.keywords:
            if has_cuda is None:
                import torch
                has_cuda = torch.cuda.is_available()
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason='needs a CUDA GPU (none here)'))

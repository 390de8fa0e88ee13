"""Shared pytest set-up: numerics, KeOps cache, and the slow/GPU markers.

Slow and GPU-only tests are skipped by default *with a reason* (shown by
``-ra``); run them with ``--runslow`` / on a CUDA machine.
"""
import os

import pytest

# A fixed, writable KeOps build folder so repeated runs reuse compiled formulas.
os.environ.setdefault('CFGEODL_KEOPS_CACHE', os.path.join(
    os.path.expanduser('~'), '.cache', 'continuousflex_geodl', 'keops-tests'))
os.environ.setdefault('KEOPS_CACHE_FOLDER', os.environ['CFGEODL_KEOPS_CACHE'])
os.environ.setdefault('MPLBACKEND', 'Agg')
# OpenMP threads sleep when idle (set before torch loads): spinning threads
# slow the suite many-fold on a shared 2-core machine
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


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

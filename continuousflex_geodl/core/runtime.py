"""Process-wide numerical set-up: denormals, threads, KeOps cache, devices."""
import logging
import os

logger = logging.getLogger(__name__)

_DONE = False


def default_keops_cache(name='keops'):
    """The package's default KeOps build folder, ``~/.cache/continuousflex_geodl/<name>``
    (the one place that names it: plugin, workflow and tests use this)."""
    return os.path.join(os.path.expanduser('~'), '.cache', 'continuousflex_geodl', name)


def keops_cache_folder():
    """Fixed KeOps build folder: env ``CFGEODL_KEOPS_CACHE``, else env
    ``KEOPS_CACHE_FOLDER``, else ``default_keops_cache()``."""
    return os.environ.get('CFGEODL_KEOPS_CACHE') or os.environ.get(
        'KEOPS_CACHE_FOLDER') or default_keops_cache()


def setup(threads=None):
    """Call first: flush denormals (Gaussian tails), thread count, KeOps cache.

    Must run before any parallel torch op (OpenMP threads created earlier
    keep the old denormal setting).  Safe to call more than once.
    """
    global _DONE
    import warnings
    # numpy's finfo warns once flush-to-zero is on; harmless here
    warnings.filterwarnings('ignore', message='The value of the smallest subnormal')
    import torch
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(int(threads))
    if not _DONE:
        keep_freed_memory()
        folder = keops_cache_folder()
        os.environ.setdefault('KEOPS_CACHE_FOLDER', folder)
        _DONE = True


#: environment variable that leaves the C allocator at its defaults ("1")
MALLOC_DEFAULTS_ENV = 'CFGEODL_MALLOC_DEFAULTS'
#: allocations below this come from the heap and freed heap memory up to this
#: size is kept for reuse (glibc ``mallopt``), in bytes
MALLOC_KEEP_BYTES = 1 << 30


def keep_freed_memory(nbytes=MALLOC_KEEP_BYTES):
    """Let glibc reuse freed memory instead of returning it to the system.

    By default glibc serves every allocation above 128 kB-32 MB with a fresh
    ``mmap`` and unmaps it when freed, so each of the many same-sized
    (batch, atoms, pixels) temporaries of rendering is page-faulted in anew:
    on 2,000 particles at 64 px this made the Gauss-Newton refinement 1.4-1.7x
    slower and training steps 1.1-1.3x (``benchmarks/report/realistic_gap.md``).
    Raising the mmap and trim thresholds keeps up to ``nbytes`` of freed
    memory in the process (its peak memory is unchanged).  Returns True when
    applied; a no-op elsewhere than glibc, or with ``CFGEODL_MALLOC_DEFAULTS=1``.
    """
    if os.environ.get(MALLOC_DEFAULTS_ENV, '').strip() in ('1', 'true', 'yes'):
        return False
    import ctypes
    import ctypes.util
    import sys
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl)
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    ok = bool(mallopt(M_MMAP_THRESHOLD, int(nbytes))) & bool(mallopt(M_TRIM_THRESHOLD, int(nbytes)))
    logger.debug('glibc keeps up to %d bytes of freed memory: %s', nbytes, ok)
    return ok


def init_keops():
    """Import pykeops with a fixed, writable build folder; return the module."""
    setup()
    folder = os.environ['KEOPS_CACHE_FOLDER']
    os.makedirs(folder, exist_ok=True)
    import pykeops
    pykeops.set_build_folder(folder)
    return pykeops


#: environment variable that allows the CPU fallback for every command
CPU_FALLBACK_ENV = 'CFGEODL_ALLOW_CPU_FALLBACK'


def resolve_device(name='cpu', allow_cpu_fallback=None):
    """'cpu', 'cuda', 'gpu' or 'cuda:N' -> torch.device, with a clear error.

    Raises RuntimeError when CUDA is asked for and absent (or GPU N does not
    exist), unless the CPU fallback is allowed (``allow_cpu_fallback``; None:
    the environment variable ``CFGEODL_ALLOW_CPU_FALLBACK=1``): then returns
    cpu and warns on stderr.  Unknown names raise ValueError.
    """
    import torch
    if allow_cpu_fallback is None:
        allow_cpu_fallback = os.environ.get(CPU_FALLBACK_ENV, '').strip().lower() in (
            '1', 'true', 'yes', 'on')
    name = str(name or 'cpu').strip().lower()
    if name.startswith('cuda') or name == 'gpu':
        index = None
        if name.startswith('cuda:'):
            try:
                index = int(name[5:])
            except ValueError:
                raise ValueError("Unknown device '%s': use cpu, cuda or cuda:N (N a GPU "
                                 "number)" % name) from None
        elif name not in ('cuda', 'gpu'):
            raise ValueError("Unknown device '%s': use cpu, cuda or cuda:N" % name)
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
        problem = None
        if not available:
            problem = ("Device '%s' was requested but this machine has no usable CUDA GPU "
                       "(torch.cuda.is_available() is False)" % name)
        elif index is not None and not 0 <= index < count:
            problem = ("Device '%s' was requested but this machine has %d CUDA GPU(s) "
                       "(numbered 0 to %d)" % (name, count, count - 1))
        if problem:
            if allow_cpu_fallback:
                logger.warning('%s; running on the CPU instead (CPU fallback allowed).',
                               problem)
                return torch.device('cpu')
            raise RuntimeError(
                '%s. Run with --device cpu, or allow the CPU fallback (train '
                '--allow-cpu-fallback, or set the environment variable %s=1).'
                % (problem, CPU_FALLBACK_ENV))
        return torch.device('cuda' if name == 'gpu' else name)
    if name != 'cpu':
        raise ValueError("Unknown device '%s': use cpu, cuda or cuda:N" % name)
    return torch.device('cpu')

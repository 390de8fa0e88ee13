"""Process-wide numerical set-up: denormals, threads, KeOps cache, devices."""
import os

_DONE = False


def keops_cache_folder():
    """Fixed KeOps build folder (env ``CFGEODL_KEOPS_CACHE`` overrides)."""
    return os.environ.get('CFGEODL_KEOPS_CACHE') or os.environ.get(
        'KEOPS_CACHE_FOLDER') or os.path.join(
        os.path.expanduser('~'), '.cache', 'continuousflex_geodl', 'keops')


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
        folder = keops_cache_folder()
        os.environ.setdefault('KEOPS_CACHE_FOLDER', folder)
        _DONE = True


def init_keops():
    """Import pykeops with a fixed, writable build folder; return the module."""
    setup()
    folder = os.environ['KEOPS_CACHE_FOLDER']
    os.makedirs(folder, exist_ok=True)
    import pykeops
    pykeops.set_build_folder(folder)
    return pykeops


def resolve_device(name='cpu', allow_cpu_fallback=False):
    """'cpu', 'cuda' or 'cuda:N' -> torch.device, with a clear error.

    Raises RuntimeError when CUDA is asked for and absent, unless
    ``allow_cpu_fallback`` (then returns cpu and warns on stderr).
    """
    import sys
    import torch
    name = (name or 'cpu').strip().lower()
    if name.startswith('cuda') or name == 'gpu':
        if not torch.cuda.is_available():
            if allow_cpu_fallback:
                print('WARNING: CUDA requested but not available; running on the CPU.',
                      file=sys.stderr)
                return torch.device('cpu')
            raise RuntimeError(
                "Device '%s' was requested but this machine has no usable CUDA GPU "
                "(torch.cuda.is_available() is False). Use --device cpu, or allow the "
                "CPU fallback." % name)
        return torch.device('cuda' if name == 'gpu' else name)
    if name != 'cpu':
        raise ValueError("Unknown device '%s': use cpu, cuda or cuda:N" % name)
    return torch.device('cpu')

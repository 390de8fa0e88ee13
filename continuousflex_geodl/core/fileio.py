"""Safe files: atomic writes and paths that cannot escape their folder."""
import contextlib
import os
import tempfile


def _umask_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path, mode='w', **kwargs):
    """Write ``path`` through a temporary file in the same folder, then rename.

    A crash leaves either the old file or the new one, never half of it.
    Yields an open file object (``mode`` 'w' or 'wb').
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp',
                               dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    For libraries that want a file name rather than a file object.  The
    temporary name keeps the extension (libraries may look at it).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='-' + base, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def safe_join(base, relpath):
    """``base/relpath`` as an absolute path, refusing paths that leave ``base``.

    Absolute ``relpath`` values are refused too: file names read from input
    files (e.g. ``i@stack.mrcs`` in a .star) must stay inside their folder.
    """
    base = os.path.realpath(base)
    if os.path.isabs(relpath):
        raise ValueError("Refusing absolute path '%s' read from an input file: "
                         "paths must be relative to %s" % (relpath, base))
    full = os.path.realpath(os.path.join(base, relpath))
    if os.path.commonpath([base, full]) != base:
        raise ValueError("Refusing path '%s': it points outside the folder %s"
                         % (relpath, base))
    return full

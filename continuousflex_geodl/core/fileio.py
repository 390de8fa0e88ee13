"""Safe files: atomic writes, paths that cannot escape their folder, safe loads.

* ``atomic_write`` / ``atomic_path`` (and ``temp_path`` + ``commit`` /
  ``discard`` for writers that outlive one block): every output goes to a
  temporary name in the same folder and is renamed (``os.replace``) when
  complete, so a crash leaves the old file or the new one, never half of one.
  This module is the only place that renames files into place.
* ``safe_join``: strict join for names that must stay inside a folder
  (absolute names and symlinks out of it refused).
* ``check_data_path`` / ``data_root``: the policy for image files named in
  input metadata (.star / .xmd), see ``check_data_path``.
* ``load_torch_state``: ``torch.load(weights_only=True)`` with clear errors;
  arbitrary pickles are refused, never executed.
"""
import contextlib
import os
import shutil
import tempfile

import numpy as np

#: environment variable naming the folder every input data file must lie in
DATA_ROOT_ENV = 'CFGEODL_DATA_ROOT'


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
    tmp = temp_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def temp_path(path):
    """Create an empty temporary file next to ``path`` (same folder, same
    extension) and return its name: the first half of an atomic write whose
    lifetime is not one ``with`` block (e.g. a stack written in chunks).
    Finish with ``commit(tmp, path)`` or ``discard(tmp)``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='-' + os.path.basename(path), dir=folder)
    os.close(fd)
    return tmp


def commit(tmp, path):
    """Flush ``tmp`` to disk and rename it to ``path`` (atomic); on failure
    ``tmp`` is removed and the old ``path`` is left as it was."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600
        os.replace(tmp, os.fspath(path))
    except BaseException:
        discard(tmp)
        raise


def discard(tmp):
    """Remove an uncommitted temporary file (no error if it is gone)."""
    with contextlib.suppress(OSError):
        os.remove(tmp)


def atomic_write_text(path, text):
    """Write the string ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path, 'w') as fh:
        fh.write(text)
    return path


def atomic_savez(path, **arrays):
    """``numpy.savez`` to ``path`` atomically (the name is kept as given)."""
    import numpy as np
    with atomic_write(path, 'wb') as fh:
        np.savez(fh, **arrays)
    return path


def atomic_torch_save(obj, path):
    """``torch.save`` to ``path`` atomically (flushed to disk before the rename)."""
    import torch
    with atomic_write(path, 'wb') as fh:
        torch.save(obj, fh)
    return path


def atomic_copy(src, dst, link=True):
    """Make ``dst`` a copy of ``src`` atomically: with ``link``, a hard link
    when the file system allows it (no data copied; for files that are only
    ever replaced, never modified in place, e.g. checkpoints), else a copy
    flushed to disk.  A crash leaves the old ``dst`` or the new one."""
    tmp = temp_path(dst)
    try:
        linked = False
        if link:
            os.remove(tmp)  # os.link needs a free name
            try:
                os.link(os.fspath(src), tmp)
                linked = True
            except OSError:
                pass
        if not linked:
            shutil.copyfile(os.fspath(src), tmp)
    except BaseException:
        discard(tmp)
        raise
    commit(tmp, dst)
    return dst


@contextlib.contextmanager
def atomic_npy_memmap(path, dtype, shape):
    """Yield a ``numpy.lib.format.open_memmap`` array at a temporary ``.npy``
    next to ``path``, renamed to ``path`` when the block ends normally and
    removed otherwise (outputs written chunk by chunk, larger than memory)."""
    from numpy.lib.format import open_memmap
    with atomic_path(path) as tmp:
        arr = open_memmap(tmp, mode='w+', dtype=dtype, shape=shape)
        try:
            yield arr
            arr.flush()
        finally:
            del arr


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


def data_root(root=None):
    """The data root folder (absolute), from ``root`` or the environment
    variable ``CFGEODL_DATA_ROOT``; None when neither is set."""
    root = root if root is not None else os.environ.get(DATA_ROOT_ENV)
    return os.path.abspath(os.path.expanduser(os.fspath(root))) if root else None


def is_inside(path, folder):
    """True when ``path`` is ``folder`` or below it (lexically, after normpath)."""
    path, folder = os.path.normpath(os.path.abspath(path)), \
        os.path.normpath(os.path.abspath(folder))
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # different drives
        return False


def check_data_path(name, source):
    """Check a file name read from the input metadata file ``source``.

    Policy (the names come from files that may have been made elsewhere):

    * a relative name may not climb out of the folder it is resolved
      against (``../..`` prefixes are refused): RELION writes names relative
      to its project folder, never with ``..``;
    * absolute names are accepted (RELION, Scipion and our own writer use
      them for stacks outside the metadata file's folder), unless a data root
      is set (``root``, or the environment variable ``CFGEODL_DATA_ROOT``,
      e.g. the Scipion project folder): then every resolved image file must
      lie inside it.  The check is lexical: symbolic links inside the root
      (as Scipion makes for imported files) are trusted.
    * names with NUL bytes or empty names are refused.

    Raises ValueError naming the file and the fix; returns ``name``.
    """
    if not isinstance(name, str) or not name.strip() or '\x00' in name:
        raise ValueError("The particle file %s names an invalid image file %r: each "
                         "image must be index@file" % (source, name))
    if not os.path.isabs(name):
        norm = os.path.normpath(name)
        if norm == '..' or norm.startswith('..' + os.sep):
            raise ValueError(
                "Refusing image path '%s' in %s: it climbs out of the folder it is "
                "relative to ('..'). Write image paths relative to the project folder "
                "(as RELION does) or as absolute paths." % (name, source))
    return name


def check_in_root(path, source, root=None):
    """Refuse ``path`` (a resolved image file) when a data root is set and the
    path lies outside it (see ``check_data_path``)."""
    root = data_root(root)
    if root is not None and not is_inside(path, root):
        raise ValueError(
            "Refusing image file '%s' named in %s: it lies outside the data folder %s. "
            "Move or link the stacks into that folder, or set %s to a folder that holds "
            "them." % (path, source, root, DATA_ROOT_ENV))
    return path


def load_torch_state(path, what='model file'):
    """``torch.load(path, map_location='cpu', weights_only=True)`` with clear errors.

    Only tensors and plain containers load; a file that would unpickle other
    Python objects (e.g. a malicious ``__reduce__``) is refused before any of
    it runs.  A truncated / half-written file gives a ValueError naming it.
    """
    import pickle

    import torch
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError('The %s %s does not exist' % (what, path))
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            'Refusing to load the %s %s: it contains Python objects other than tensors, '
            'which could run arbitrary code (nothing in the file was run: only weights are '
            'loaded, with torch.load(weights_only=True)). It was not written by '
            'continuousflex_geodl '
            'or has been altered: restore it or train again.' % (what, path)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError,
            AttributeError, TypeError) as exc:
        raise ValueError(
            'The %s %s is truncated or corrupt (%s: %s). Restore it from a copy or '
            'train again.' % (what, path, type(exc).__name__,
                              ' '.join(str(exc).split()).split('. ')[0][:200])) from None

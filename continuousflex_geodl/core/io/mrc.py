"""MRC volumes and image stacks (mrcfile), with clear errors and lazy stacks.

Header convention: voxel size = ``apix``; the header origin is set to
``-(D // 2) * apix`` on each axis, so that voxel ``D // 2`` is the
coordinate origin, as in the core (pixel ``i`` centre at ``(i - D//2) apix``).
Arrays are float32, volumes ``[iz, iy, ix]``, stacks ``(N, D, D)``.
"""
import os

import numpy as np

from ..fileio import atomic_path


def _open(path, mode='r', mmap=False):
    import mrcfile
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("MRC file not found: %s" % path)
    try:
        if mmap:
            return mrcfile.mmap(path, mode=mode, permissive=False)
        return mrcfile.open(path, mode=mode, permissive=False)
    except Exception as exc:  # mrcfile raises ValueError/OSError/EOFError...
        raise ValueError("Cannot read the MRC file %s (%s: %s). The file is "
                         "truncated or not an MRC image/stack; re-export it."
                         % (path, type(exc).__name__, exc)) from None


def read_mrc(path):
    """-> (float32 array, apix in A)."""
    with _open(path) as m:
        data = np.asarray(m.data, dtype=np.float32).copy()
        apix = float(m.voxel_size.x)
    return data, (apix if apix > 0 else 1.0)


def write_mrc(path, data, apix, is_stack=None):
    """Write a volume (D, D, D) or stack (N, D, D) atomically; float32."""
    import mrcfile
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(data)
            if is_stack or (is_stack is None and str(path).endswith('.mrcs')):
                m.set_image_stack()
            m.voxel_size = float(apix)
            d = data.shape[-1]
            m.header.origin.x = -(d // 2) * apix
            m.header.origin.y = -(data.shape[-2] // 2) * apix
            m.header.origin.z = 0.0 if m.is_image_stack() else -(data.shape[0] // 2) * apix
    return path


def open_stack(path):
    """Memory-mapped (N, D, D) read-only view of an MRC stack (lazy)."""
    m = _open(path, mmap=True)
    data = m.data
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1] != data.shape[2]:
        raise ValueError("The stack %s has shape %s: square images (N, D, D) expected"
                         % (path, tuple(data.shape)))
    return data


class StackWriter:
    """Append images to an MRC stack in chunks (memory does not grow with N).

    Writes to a temporary file and renames on ``close()``; the number of
    images must be given up front.
    """

    def __init__(self, path, n, box, apix):
        import mrcfile
        self.path, self.n, self.apix = os.fspath(path), int(n), float(apix)
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        self.tmp = os.path.join(folder, '.tmp-%d-%s' % (os.getpid(), os.path.basename(self.path)))
        self._m = mrcfile.new_mmap(self.tmp, shape=(self.n, box, box), mrc_mode=2,
                                   overwrite=True)
        self._m.set_image_stack()
        self._m.voxel_size = self.apix
        self.count = 0

    def write(self, images):
        images = np.asarray(images, dtype=np.float32)
        self._m.data[self.count:self.count + len(images)] = images
        self.count += len(images)

    def close(self):
        if self.count != self.n:
            raise ValueError('StackWriter: %d images written, %d announced'
                             % (self.count, self.n))
        self._m.update_header_stats()
        self._m.close()
        os.replace(self.tmp, self.path)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._m.close()
            if os.path.exists(self.tmp):
                os.remove(self.tmp)

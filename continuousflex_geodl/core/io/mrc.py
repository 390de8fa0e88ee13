"""MRC volumes and image stacks (mrcfile), with clear errors and lazy stacks.

Header convention written here (and expected by the core):

* voxel size = ``apix`` A on every axis (header ``cella = shape * apix``);
* header ``origin`` (A) = ``-(D // 2) * apix`` on x and y (and z for a
  volume; 0 for the z of an image stack), i.e. the coordinate of voxel 0.
  Voxel ``D // 2`` is therefore at coordinate 0, the core convention (pixel
  ``i`` centre at ``(i - D//2) apix``); UCSF Chimera/ChimeraX place a map
  written here where the core's pseudo-atoms are, and Scipion's default
  volume origin (``-D/2 * sampling``) agrees for even boxes.

Arrays are float32: volumes ``[iz, iy, ix]``, stacks ``(N, D, D)`` (MRC
files store x fastest, so this is the file's natural order).  Reading
errors from mrcfile (truncated file, bad header, not an MRC file) are
re-raised as ``ValueError`` naming the file; a missing file is
``FileNotFoundError``.
"""
import logging
import os
import warnings

import numpy as np

from ..fileio import atomic_path, commit, discard, temp_path

logger = logging.getLogger(__name__)

#: extensions read with mrcfile (others go through the Xmipp bindings)
MRC_EXTENSIONS = ('.mrc', '.mrcs', '.map', '.st', '.ali', '.rec')


def _bad(path, why):
    return ValueError("Cannot read the MRC file %s: %s. The file is truncated or is not an "
                      "MRC image/stack/map; re-export or re-extract it." % (path, why))


def _check_header(path):
    """Cheap sanity check of the 1024-byte header against the file size.

    Catches truncated files (fewer bytes than the header announces) and
    absurd headers before mrcfile allocates buffers from them (a corrupt
    extended-header size could otherwise ask for gigabytes).  Headers this
    check cannot interpret are left to mrcfile.
    """
    from mrcfile import utils
    from mrcfile.dtypes import HEADER_DTYPE
    size = os.path.getsize(path)
    if size < HEADER_DTYPE.itemsize:
        raise _bad(path, 'it has %d bytes, fewer than the 1024 of an MRC header' % size)
    with open(path, 'rb') as f:
        raw = f.read(HEADER_DTYPE.itemsize)
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).reshape(())
    if bytes(header['map'])[:3] != b'MAP':
        raise _bad(path, "no 'MAP' identifier in its header")
    try:
        order = utils.byte_order_from_machine_stamp(header['machst'])
        header = header.view(HEADER_DTYPE.newbyteorder(order))
        dtype = utils.dtype_from_mode(header['mode'])
    except (ValueError, TypeError):
        return  # unusual stamp or mode: mrcfile decides (and its error is wrapped)
    nx, ny, nz, ext = (int(header[k]) for k in ('nx', 'ny', 'nz', 'nsymbt'))
    if min(nx, ny, nz) < 1 or ext < 0:
        raise _bad(path, 'its header gives impossible dimensions %d x %d x %d (extended '
                   'header %d bytes)' % (nx, ny, nz, ext))
    need = HEADER_DTYPE.itemsize + ext + nx * ny * nz * np.dtype(dtype).itemsize
    if size < need:
        raise _bad(path, 'its header announces %d x %d x %d values (%d bytes with the '
                   'headers) but the file has only %d bytes' % (nx, ny, nz, need, size))


def _open(path, mmap=False):
    import mrcfile
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("MRC file not found: %s" % path)
    if os.path.isdir(path):
        raise ValueError("%s is a folder, not an MRC file" % path)
    try:
        _check_header(path)
    except OSError as exc:
        raise _bad(path, '%s: %s' % (type(exc).__name__, exc)) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if mmap:
                return mrcfile.mmap(path, mode='r', permissive=False)
            return mrcfile.open(path, mode='r', permissive=False)
    except Exception as exc:  # mrcfile raises ValueError/OSError/EOFError...
        raise ValueError("Cannot read the MRC file %s (%s: %s). The file is truncated "
                         "or is not an MRC image/stack/map; re-export or re-extract it."
                         % (path, type(exc).__name__, exc)) from None


def _voxel_size(m, path):
    apix = float(m.voxel_size.x)
    if not np.isfinite(apix) or apix <= 0:
        warnings.warn("The MRC header of %s gives no voxel size; assuming 1 A/pixel "
                      "(give the pixel size explicitly)" % path)
        return 1.0
    return apix


def read_mrc(path):
    """Whole file -> (float32 array, apix in A).  Volumes (D, D, D), stacks (N, D, D)."""
    with _open(path) as m:
        data = np.array(m.data, dtype=np.float32)
        apix = _voxel_size(m, path)
    return data, apix


def mrc_info(path):
    """Header facts without reading the data: dict(shape, apix, origin (x, y, z) A,
    is_stack)."""
    with _open(path, mmap=True) as m:
        o = m.header.origin
        return dict(shape=tuple(int(s) for s in m.data.shape), apix=_voxel_size(m, path),
                    origin=(float(o.x), float(o.y), float(o.z)),
                    is_stack=bool(m.is_image_stack()))


def check_same_grid(path, box, apix, what='The reference map', rtol=0.01):
    """Compare a map's grid with the particles' (``box`` px, ``apix`` A/px).

    A pixel size differing by more than ``rtol`` raises ValueError offering
    the resampling command; a different box at the same pixel size only
    warns (the map is used in A about its centre).  Returns the map's
    (box, apix).
    """
    info = mrc_info(path)
    mbox, mapix = int(info['shape'][-1]), float(info['apix'])
    cmd = ("relion_image_handler --i %s --o resampled.mrc --angpix %.4f --rescale_angpix "
           "%.4f --new_box %d" % (os.path.basename(os.fspath(path)), mapix, float(apix),
                                  int(box)))
    if abs(mapix - float(apix)) > rtol * float(apix):
        raise ValueError('%s %s has %d px at %.4f A/px but the particles have %d px at %.4f '
                         'A/px: resample the map onto the particles\' grid first, e.g. %s '
                         '(or Scipion/Xmipp "crop/resize volumes"); if the map header\'s '
                         'pixel size is wrong, fix the header instead.'
                         % (what, path, mbox, mapix, int(box), float(apix), cmd))
    if mbox != int(box):
        logger.warning('%s %s has a box of %d px and the particles %d px (same pixel size); '
                       'it is used in A about its centre. To match exactly, resample it: %s',
                       what, path, mbox, int(box), cmd)
    return mbox, mapix


def _set_header(m, shape, apix, stack):
    m.voxel_size = float(apix)
    m.header.origin.x = -(shape[-1] // 2) * apix
    m.header.origin.y = -(shape[-2] // 2) * apix
    m.header.origin.z = 0.0 if stack else -(shape[0] // 2) * apix


def write_mrc(path, data, apix, is_stack=None):
    """Write a volume (D, D, D), a stack (N, D, D) or one image (D, D) atomically.

    float32; header voxel size ``apix`` and origin as in the module docstring.
    ``is_stack`` defaults to True for ``.mrcs`` names and 2D input.
    """
    import mrcfile
    apix = float(apix)
    if not np.isfinite(apix) or apix <= 0:
        raise ValueError('write_mrc(%s): the pixel size must be > 0 A, got %r' % (path, apix))
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
        is_stack = True if is_stack is None else is_stack
    if data.ndim != 3:
        raise ValueError('write_mrc(%s): expected a 2D image or 3D volume/stack, got shape %s'
                         % (path, data.shape))
    stack = bool(is_stack) if is_stack is not None else str(path).endswith('.mrcs')
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(data)
            if stack:
                m.set_image_stack()
            else:
                m.set_volume()
            _set_header(m, data.shape, apix, stack)
    return os.fspath(path)


def open_stack(path):
    """Memory-mapped, read-only (N, D, D) view of an MRC stack (nothing is loaded).

    A single 2D image gives N = 1.  Raises ValueError for non-square images.
    """
    m = _open(path, mmap=True)
    data = m.data
    m.close()  # the memmap stays valid (read-only); the file handle is released
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[1] != data.shape[2]:
        raise ValueError("The stack %s has shape %s: square images (N, D, D) are expected "
                         "(re-extract the particles with a square box)"
                         % (path, tuple(data.shape)))
    return data


class StackStats:
    """Streaming min / max / mean / rms of float arrays (float64 sums): the
    header statistics of a stack written in chunks."""

    def __init__(self):
        self.n, self.s, self.s2 = 0, 0.0, 0.0
        self.lo, self.hi = np.inf, -np.inf

    def add(self, x):
        x = np.asarray(x, dtype=np.float64)
        if not x.size:
            return self
        self.n += x.size
        self.s += x.sum()
        self.s2 += np.sum(x * x)
        self.lo, self.hi = min(self.lo, x.min()), max(self.hi, x.max())
        return self

    @property
    def mean(self):
        return self.s / self.n

    @property
    def var(self):
        return max(self.s2 / self.n - self.mean ** 2, 0.0)

    def set_header(self, mrc):
        """Write dmin, dmax, dmean and rms into an open mrcfile's header."""
        mrc.header.dmin, mrc.header.dmax = self.lo, self.hi
        mrc.header.dmean, mrc.header.rms = self.mean, np.sqrt(self.var)


class StackWriter:
    """An MRC stack of ``n`` float32 images ``box`` x ``box``, written in chunks.

    The header (voxel size and origin as in the module docstring) is written
    first; images go in with plain file I/O (no memory map: resident memory
    does not grow with ``n``), in order (``write(images)``) or at a given
    index (``write(images, start=k)``, e.g. to rewrite them); ``read(start,
    stop)`` reads back what was written.  Everything goes to a temporary file
    in the same folder: ``close(stats=None)`` sets the header statistics
    (those of the data, or the ``StackStats`` given) and renames it to
    ``path`` (``core.fileio.commit``); ``abort()`` (or an exception in a
    ``with`` block) removes it.  Every image must be written before
    ``close()``.
    """

    def __init__(self, path, n, box, apix):
        import mrcfile
        self.path, self.n, self.box, self.apix = os.fspath(path), int(n), int(box), float(apix)
        self.tmp = temp_path(self.path)
        self._fh = None
        try:
            with mrcfile.new_mmap(self.tmp, shape=(self.n, self.box, self.box), mrc_mode=2,
                                  overwrite=True) as m:
                m.set_image_stack()
                _set_header(m, (self.n, self.box, self.box), self.apix, True)
                self._offset = m.header.nbytes + int(m.header.nsymbt)
                self._dtype = m.data.dtype
            self._fh = open(self.tmp, 'r+b')
        except BaseException:
            discard(self.tmp)
            raise
        self._done = np.zeros(self.n, dtype=bool)
        self._stats, self._rewritten = StackStats(), False
        self.count = 0  # next index of an in-order write

    def _seek(self, start):
        self._fh.seek(self._offset + start * self.box * self.box * self._dtype.itemsize)

    def write(self, images, start=None):
        """Write ``images`` (D, D) or (k, D, D) at index ``start`` (default: after
        the previous in-order write)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.shape[1:] != (self.box, self.box):
            raise ValueError('StackWriter(%s): images of shape %s, the stack holds %d x %d'
                             % (self.path, images.shape[1:], self.box, self.box))
        start = self.count if start is None else int(start)
        stop = start + len(images)
        if start < 0 or stop > self.n:
            raise ValueError('StackWriter(%s): more images than the %d announced'
                             % (self.path, self.n))
        self._seek(start)
        self._fh.write(np.ascontiguousarray(images, dtype=self._dtype).tobytes())
        self._rewritten |= bool(self._done[start:stop].any())
        self._done[start:stop] = True
        self._stats.add(images)
        self.count = max(self.count, stop)
        return self

    def read(self, start, stop):
        """Images ``start:stop`` as written so far, float32 (k, D, D)."""
        self._fh.flush()
        self._seek(start)
        count = (stop - start) * self.box * self.box
        data = np.frombuffer(self._fh.read(count * self._dtype.itemsize), dtype=self._dtype)
        return data.reshape(stop - start, self.box, self.box).astype(np.float32)

    def _data_stats(self, chunk=256):
        if not self._rewritten:
            return self._stats
        stats = StackStats()
        for s in range(0, self.n, chunk):
            stats.add(self.read(s, min(self.n, s + chunk)))
        return stats

    def close(self, stats=None):
        """Finish the file (header statistics: ``stats`` or the data's) and move
        it to ``path``; returns ``path``."""
        import mrcfile
        written = int(self._done.sum())
        if written != self.n:
            self.abort()
            raise ValueError('StackWriter(%s): %d images written, %d announced'
                             % (self.path, written, self.n))
        try:
            stats = stats if stats is not None else self._data_stats()
            self._fh.close()
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                with mrcfile.mmap(self.tmp, mode='r+') as m:
                    stats.set_header(m)
        except BaseException:
            self.abort()
            raise
        commit(self.tmp, self.path)
        return self.path

    def abort(self):
        """Drop the temporary file (nothing is written to ``path``)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        discard(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

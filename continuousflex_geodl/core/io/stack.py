"""Lazy image sources for particle sets: images stay on disk until indexed.

``ImageSource`` reads particles referenced as (stack file, 0-based index)
pairs from MRC stacks through read-only memory maps (other formats Xmipp
reads, e.g. Spider ``.stk``, one image at a time through ``xmippLib``).
``ArrayImageSource`` gives the same interface to an in-memory array or an
``np.memmap``.  Both return float32 ``(n, D, D)`` for an int, a slice, an
integer array or a boolean mask, and pickle without their data (safe for
multiprocessing data loaders).
"""
import os
from collections import OrderedDict

import numpy as np

from ..fileio import check_data_path, check_in_root, data_root
from .mrc import MRC_EXTENSIONS, StackWriter, open_stack


class _XmippStack:
    """Read-only (N, D, D) stack in a format of the Xmipp bindings (Spider...)."""

    def __init__(self, path):
        try:
            import xmippLib
        except ImportError:
            raise ValueError("Cannot read the image stack %s: it is not an MRC file and "
                             "the Xmipp bindings (pyxmipp3) are not installed. Convert "
                             "it to .mrcs." % path) from None
        if not os.path.exists(path):
            raise FileNotFoundError("Image stack not found: %s" % path)
        self._x, self.path = xmippLib, path
        try:
            img = xmippLib.Image()
            img.read(path, xmippLib.HEADER)
            x, y, z, n = img.getDimensions()
        except Exception as exc:
            first = ' '.join(str(exc).split()).split(' File: ')[0][:200]
            raise ValueError("Cannot read the image stack %s: it is neither an MRC stack nor "
                             "an image format the Xmipp bindings read (%s). Convert it to "
                             ".mrcs or correct the path." % (path, first)) from None
        if z != 1 or x != y:
            raise ValueError("The stack %s holds images of %dx%dx%d voxels: square 2D "
                             "images are expected" % (path, x, y, z))
        self.shape = (int(n), int(y), int(x))

    def __getitem__(self, idx):
        idx = np.atleast_1d(idx)
        out = np.empty((len(idx), self.shape[1], self.shape[2]), dtype=np.float32)
        for k, i in enumerate(idx):
            out[k] = self._x.Image('%d@%s' % (int(i) + 1, self.path)).getData()
        return out


def open_image_file(path):
    """(N, D, D) lazily indexable stack: MRC memory map, or Xmipp reader."""
    path = os.fspath(path)
    if path.lower().endswith(MRC_EXTENSIONS):
        return open_stack(path)
    if not os.path.exists(path):
        raise FileNotFoundError("Image stack not found: %s" % path)
    return _XmippStack(path)


def resolve_image_path(name, meta_dir, cache=None, root=None, source=None):
    """Absolute path of an image file named in a metadata file (.star/.xmd).

    Absolute names are kept.  Relative names are looked up relative to the
    metadata file's folder, then its parents (RELION writes names relative
    to the project folder, e.g. ``Extract/job012/...`` in a star under
    ``Refine3D/job020/``), never above the data root; if none exists, the
    path relative to the folder is returned (and reported missing by the
    caller).  Names that climb out with ``..``, and (when a data root is set:
    ``root`` or env ``CFGEODL_DATA_ROOT``) files outside the data root, are
    refused with a ValueError (``core.fileio.check_data_path``).
    ``source`` (the metadata file) is named in messages.
    """
    if cache is not None and name in cache:
        return cache[name]
    src = source or meta_dir
    check_data_path(name, src)
    root = data_root(root)
    if os.path.isabs(name):
        found = os.path.normpath(name)
    else:
        found, d = None, meta_dir
        for _ in range(8):
            cand = os.path.normpath(os.path.join(d, name))
            if os.path.exists(cand):
                found = cand
                break
            parent = os.path.dirname(d)
            if parent == d or (root is not None and os.path.normpath(d) == root):
                break
            d = parent
        if found is None:
            found = os.path.normpath(os.path.join(meta_dir, name))
    check_in_root(found, src, root)
    if cache is not None:
        cache[name] = found
    return found


def stack_references(meta_path, images, box, apix, stack_path=None, chunk=1024):
    """Where the images of a particle file (``meta_path``, .star or .xmd) are:
    (file list, file index, 0-based image index) per image.

    Images already on disk (an ``ImageSource``, or a memory-mapped MRC stack)
    are referenced where they are; otherwise (or when ``stack_path`` names
    another file) they are written, in chunks, to the MRC stack
    ``stack_path`` (default: ``meta_path`` with .mrcs).
    """
    n = len(images)
    if isinstance(images, ImageSource):
        single = images.single_stack()
        if stack_path is None or (single and os.path.abspath(stack_path) == single):
            return images.files, images.file_idx, images.img_idx
    elif isinstance(images, ArrayImageSource) and images.filename and \
            images.filename.lower().endswith(('.mrcs', '.mrc', '.st')):
        fn = os.path.abspath(images.filename)
        if stack_path is None or os.path.abspath(stack_path) == fn:
            return [fn], np.zeros(n, np.int64), np.arange(n)
    stack_path = os.path.abspath(stack_path or os.path.splitext(meta_path)[0] + '.mrcs')
    with StackWriter(stack_path, n, box, apix) as w:
        for s in range(0, n, chunk):
            w.write(images[np.arange(s, min(n, s + chunk))])
    return [stack_path], np.zeros(n, np.int64), np.arange(n)


def image_names(files, file_idx, img_idx, folder):
    """``000001@stack.mrcs`` names (1-based index), as RELION and Xmipp write
    them: relative to ``folder`` (the metadata file's) for stacks inside it,
    absolute otherwise."""
    names = []
    for f in files:
        f = os.path.abspath(f)
        rel = os.path.relpath(f, folder)
        names.append(f if rel.startswith('..') or os.path.isabs(rel) else rel)
    return ['%06d@%s' % (i + 1, names[f]) for f, i in zip(file_idx, img_idx)]


def _whole_file_memmap(a):
    """File name if ``a`` is an ``np.memmap`` spanning from its offset to the end
    of the file, C-contiguous (e.g. an MRC stack's data block); else None."""
    import mmap
    if not isinstance(a, np.memmap) or a._mmap is None or not a.filename:
        return None
    try:
        if not a.flags.c_contiguous or a.offset + a.nbytes != os.path.getsize(a.filename):
            return None
        start = a.offset - a.offset % mmap.ALLOCATIONGRANULARITY
        base = np.frombuffer(a._mmap, dtype=np.uint8).ctypes.data
    except (OSError, ValueError, TypeError):
        return None
    return a.filename if a.ctypes.data == base + (a.offset - start) else None


def _as_index(idx, n):
    """int / slice / int array / bool mask -> int64 array of positions."""
    if isinstance(idx, (int, np.integer)):
        idx = np.array([idx])
    elif isinstance(idx, slice):
        return np.arange(n)[idx]
    idx = np.asarray(idx)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError('Boolean mask of shape %s for %d images' % (idx.shape, n))
        return np.nonzero(idx)[0]
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(idx.dtype, np.integer):
        raise IndexError('Image indices must be integers, got %s' % idx.dtype)
    if idx.min() < -n or idx.max() >= n:
        raise IndexError('Image index out of range for %d images' % n)
    return np.where(idx < 0, idx + n, idx).astype(np.int64)


class ImageSource:
    """Images of a particle set, read lazily from stacks on disk.

    ``refs`` is a sequence of (stack file, 0-based index in it).  References
    to the same file are grouped: a batch reads each stack once, in index
    order.  At most ``max_open`` stacks stay mapped (least recently used
    are dropped; their validated layout is kept, so re-mapping is cheap).
    """

    def __init__(self, refs, max_open=256):
        self.files = []
        fid = {}
        file_idx, img_idx = [], []
        for f, i in refs:
            f = os.fspath(f)
            k = fid.get(f)
            if k is None:
                k = fid[f] = len(self.files)
                self.files.append(f)
            file_idx.append(k)
            img_idx.append(int(i))
        self.file_idx = np.asarray(file_idx, dtype=np.int64)
        self.img_idx = np.asarray(img_idx, dtype=np.int64)
        self.max_open = max_open
        self._open, self._layout = OrderedDict(), {}
        self._box = None

    @classmethod
    def from_arrays(cls, files, file_idx, img_idx, max_open=256):
        """Fast constructor: ``files`` list, per-image file index and 0-based image index."""
        new = cls.__new__(cls)
        new.files = [os.fspath(f) for f in files]
        new.file_idx = np.asarray(file_idx, dtype=np.int64)
        new.img_idx = np.asarray(img_idx, dtype=np.int64)
        if new.file_idx.shape != new.img_idx.shape:
            raise ValueError('ImageSource: file and image index arrays differ in length')
        new.max_open, new._open, new._layout, new._box = max_open, OrderedDict(), {}, None
        return new

    @classmethod
    def from_stack(cls, path, n=None):
        """All images (or the first ``n``) of one stack, in order."""
        path = os.path.abspath(os.fspath(path))
        if n is None:
            n = open_image_file(path).shape[0]
        return cls([(path, i) for i in range(n)])

    def _stack(self, k):
        s = self._open.get(k)
        if s is not None:
            self._open.move_to_end(k)
            return s
        layout = self._layout.get(k)
        if layout is not None:  # validated before: re-map without parsing the header
            s = np.memmap(self.files[k], mode='r', dtype=layout[0], shape=layout[1],
                          offset=layout[2])
        else:
            s = open_image_file(self.files[k])
            if isinstance(s, np.memmap):
                self._layout[k] = (s.dtype, s.shape, s.offset)
        self._open[k] = s
        if len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return s

    def check(self):
        """Open every stack once: missing or unreadable files, box sizes, indices."""
        boxes = {}
        for k, f in enumerate(self.files):
            s = self._stack(k)
            boxes.setdefault(int(s.shape[-1]), f)
            sel = self.img_idx[self.file_idx == k]
            if sel.size and (sel.max() >= s.shape[0] or sel.min() < 0):
                raise ValueError("The stack %s has %d images but image %d is referenced "
                                 "(the stack is truncated or the metadata is wrong)"
                                 % (f, s.shape[0], sel.max() + 1))
        if len(boxes) > 1:
            raise ValueError('The particle stacks have different box sizes: %s. Re-extract '
                             'all particles with the same box.'
                             % ', '.join('%d px (%s)' % kv for kv in sorted(boxes.items())))
        return self

    @property
    def box(self):
        if self._box is None:
            self._box = int(self._stack(int(self.file_idx[0])).shape[-1]) if len(self) else 0
        return self._box

    def __len__(self):
        return len(self.img_idx)

    def __getitem__(self, idx):
        idx = _as_index(idx, len(self))
        out = np.empty((len(idx), self.box, self.box), dtype=np.float32)
        if not len(idx):
            return out
        fk, ik = self.file_idx[idx], self.img_idx[idx]
        for k in np.unique(fk):
            sel = np.nonzero(fk == k)[0]
            s = self._stack(int(k))
            want = ik[sel]
            if want.max() >= s.shape[0]:
                raise ValueError("The stack %s has %d images but image %d is referenced "
                                 "(the stack is truncated or the metadata is wrong)"
                                 % (self.files[k], s.shape[0], want.max() + 1))
            if s.shape[-1] != self.box:
                raise ValueError("The stack %s has %d px images, the first stack %d px: "
                                 "re-extract all particles with the same box"
                                 % (self.files[k], s.shape[-1], self.box))
            order = np.argsort(want, kind='stable')
            out[sel[order]] = s[want[order]]
        return out

    def subset(self, indices):
        idx = _as_index(indices, len(self))
        new = ImageSource.__new__(ImageSource)
        new.files = self.files
        new.file_idx = self.file_idx[idx]
        new.img_idx = self.img_idx[idx]
        new.max_open, new._open, new._box = self.max_open, OrderedDict(), self._box
        new._layout = self._layout  # same files: share the validated layouts
        return new

    def single_stack(self):
        """The stack path if all images are images 1..N of one file, in order; else None."""
        if len(self.files) == 1 and len(self) and np.array_equal(
                self.img_idx, np.arange(len(self))):
            return self.files[0]
        return None

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_open'] = OrderedDict()  # never pickle the memory maps
        return state


class CroppedImageSource:
    """Images of another source Fourier-cropped to ``box`` pixels when read
    (``core.downsample.fourier_crop_images``): the particles of a set seen
    at a coarser pixel size (``core.particles.at_box``).  Only the images
    read are cropped; nothing is kept in memory.  Pickles as its source."""

    def __init__(self, source, box):
        self.source = source
        self.box = int(box)
        src_box = int(source.box)
        if self.box > src_box or self.box % 2 or self.box < 2:
            raise ValueError('Cannot crop %d-px particles to %d px: the training box must '
                             'be even and at most the particle box.' % (src_box, self.box))
        self.source_box = src_box

    def __len__(self):
        return len(self.source)

    @property
    def shape(self):
        return (len(self), self.box, self.box)

    def __getitem__(self, idx):
        from ..downsample import fourier_crop_images
        imgs = self.source[idx]
        if self.box == self.source_box:
            return imgs
        return fourier_crop_images(imgs, self.box)

    def subset(self, indices):
        return CroppedImageSource(self.source.subset(indices), self.box)

    def check(self):
        if hasattr(self.source, 'check'):
            self.source.check()
        return self

    def single_stack(self):
        return None


class ArrayImageSource:
    """In-memory images (or an ``np.memmap``) with the ``ImageSource`` interface."""

    def __init__(self, images):
        if isinstance(images, np.memmap) and images.dtype == np.float32:
            self.array = images
        else:
            self.array = np.asarray(images, dtype=np.float32)
        if self.array.ndim != 3 or self.array.shape[1] != self.array.shape[2]:
            raise ValueError('Images must be square, shape (N, D, D); got %s'
                             % (self.array.shape,))
        self.box = int(self.array.shape[-1])

    @property
    def filename(self):
        """The file whose whole data block this ``np.memmap`` is, else None."""
        return _whole_file_memmap(self.array)

    def __len__(self):
        return len(self.array)

    def __getitem__(self, idx):
        return np.asarray(self.array[_as_index(idx, len(self))], dtype=np.float32)

    def subset(self, indices):
        return ArrayImageSource(self.array[_as_index(indices, len(self))])

    def check(self):
        return self

    def __getstate__(self):
        a = self.array
        if _whole_file_memmap(a):
            # re-map on unpickling instead of copying the data
            return dict(memmap=(a.filename, a.dtype.str, a.shape, a.offset), box=self.box)
        return dict(array=np.asarray(a), box=self.box)

    def __setstate__(self, state):
        if 'memmap' in state:
            fn, dt, shape, off = state['memmap']
            self.array = np.memmap(fn, dtype=np.dtype(dt), mode='r', shape=shape, offset=off)
        else:
            self.array = state['array']
        self.box = state['box']

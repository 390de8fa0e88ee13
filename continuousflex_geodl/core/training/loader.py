"""Particle images of the next batches, read ahead in the background.

``BatchReader(pset, workers).batches(index_lists)`` yields ``(idx, images)``
for each array of particle indices, in order, while the images of the
following batches are being read (and Fourier-cropped, for a set seen at a
training box: ``core.particles.at_box``) by

* a background thread (``workers=0``): reading a memory-mapped stack and the
  FFTs of the crop release the GIL for most of their time;
* ``workers`` processes of a ``torch.utils.data.DataLoader`` (``workers >=
  1``): the particle set is handed to them as it is (memory-mapped stacks are
  re-mapped, never copied: ``core.io.stack``); with ``pin_memory`` the
  batches come in page-locked memory, for fast copies to a GPU.

Only ``prefetch`` batches per worker (or per thread) are in memory at any
time, whatever the number of particles.  The images are a fixed function of
the indices, so the batches are the same, in the same order, for any number
of workers.
"""
import queue
import threading

import numpy as np
import torch

from ..models.data import read_images


def default_workers(device):
    """Background reader processes when ``data_workers`` is unset: none (one
    thread) on the CPU, where the cores are the model's; 4 on a GPU."""
    return 4 if torch.device(device).type == 'cuda' else 0


class _Images(torch.utils.data.Dataset):
    """Dataset whose items are whole batches: ``ds[idx_array]`` -> images."""

    def __init__(self, pset):
        self.pset = pset

    def __len__(self):
        return len(self.pset)

    def __getitem__(self, idx):
        return read_images(self.pset, idx)


def _worker_init(_):
    torch.set_num_threads(1)


class BatchReader:
    """Reads the images of coming batches ahead (see the module docstring)."""

    def __init__(self, pset, workers=0, prefetch=2, pin_memory=False):
        self.pset = pset
        self.workers = int(workers or 0)
        if self.workers < 0:
            raise ValueError('data_workers must be 0 or more (got %d).' % self.workers)
        self.prefetch = max(1, int(prefetch))
        self.pin_memory = bool(pin_memory)

    def batches(self, index_lists):
        """Yield (idx int64 array, float32 images (B, D, D) tensor) per batch."""
        index_lists = [np.asarray(i, dtype=np.int64) for i in index_lists]
        if not index_lists:
            return
        if self.workers == 0:
            yield from self._threaded(index_lists)
            return
        loader = torch.utils.data.DataLoader(
            _Images(self.pset), batch_size=None, sampler=index_lists,
            num_workers=self.workers, prefetch_factor=self.prefetch,
            pin_memory=self.pin_memory, worker_init_fn=_worker_init)
        for idx, imgs in zip(index_lists, loader):
            yield idx, imgs

    def _threaded(self, index_lists):
        q = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item):
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def run():
            try:
                for idx in index_lists:
                    imgs = torch.from_numpy(read_images(self.pset, idx))
                    if self.pin_memory:
                        imgs = imgs.pin_memory()
                    if not put((idx, imgs, None)):
                        return
            except BaseException as exc:  # handed to the consumer, raised there
                put((None, None, exc))

        t = threading.Thread(target=run, name='particle-reader', daemon=True)
        t.start()
        try:
            for _ in range(len(index_lists)):
                idx, imgs, exc = q.get()
                if exc is not None:
                    raise exc
                yield idx, imgs
        finally:
            stop.set()
            t.join()

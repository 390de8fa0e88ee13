"""Encoder inputs of every particle, memory-mapped on disk (per process)."""
import os
import time

import numpy as np
import torch
from numpy.lib.format import open_memmap

from ..models.data import make_batch


class FeatureCache:
    """Encoder inputs of every particle, memory-mapped on disk (per process).

    The encoder inputs are a fixed function of the particle (calibration
    values are frozen), so they are computed once, the first time a particle
    is seen, and read back afterwards.  The files are named by
    ``model_dir.cache_path`` (``core.artifacts.ModelDir``) and are recreated
    for a new training run (``fresh``).
    """

    def __init__(self, model_dir, n, model, rank=0, fresh=True, dist=None):
        """``dist``: a ``distributed.Dist``; with several processes they share
        one set of files (those of rank 0: created by it, then opened by the
        others) and ``fill`` splits the particles between them, so that P
        processes compute each particle once and keep one copy on disk."""
        os.makedirs(model_dir.cache_dir, exist_ok=True)
        self.model = model
        self.arrays = {}
        self.dist = dist if dist is not None and dist.world > 1 else None
        self._shapes = shapes = {}
        if model.use_modes:
            shapes['modes'] = (n, model.encoder.n_mode_features)
        if model.use_image:
            shapes['image'] = (n, 2, model.enc_box, model.enc_box)
        shapes['done'] = (n,)
        self._paths = {name: model_dir.cache_path(name, 0 if self.dist else rank)
                       for name in shapes}
        if self.dist is None or self.dist.main:
            self._open(fresh)
        if self.dist is not None:
            for arr in self.arrays.values():
                arr.flush()
            self.dist.barrier()
            if not self.dist.main:
                self._open(False)

    def _open(self, fresh):
        """Memory-map the files (new ones when ``fresh``, or when absent or of
        another shape)."""
        for name, shape in self._shapes.items():
            path = self._paths[name]
            dtype = np.uint8 if name == 'done' else np.float32
            if fresh or not os.path.exists(path):
                arr = open_memmap(path, mode='w+', dtype=dtype, shape=shape)
                if name == 'done':
                    arr[:] = 0
            else:
                arr = open_memmap(path, mode='r+')
                if arr.shape != shape:
                    arr = open_memmap(path, mode='w+', dtype=dtype, shape=shape)
                    arr[:] = 0
            self.arrays[name] = arr

    def fill(self, pset, device, batch_size=256, log=None, reader=None, progress_every=30.0):
        """Compute the encoder inputs of every particle not cached yet, in
        batches of ``batch_size``, before training: the first epoch then
        reads them back like every later one (computing them during the
        first epoch made it about half as fast as the next ones).  Returns
        the wall time (s).  ``reader``: a ``loader.BatchReader`` that reads the
        images of the next chunks in the background; a progress line with the
        time left goes to ``log`` every ``progress_every`` seconds."""
        todo = np.nonzero(np.asarray(self.arrays['done']) == 0)[0]
        if self.dist is not None:  # this process's share (only it writes those rows)
            todo = todo[todo % self.dist.world == self.dist.rank]
        t0 = time.time()
        chunks = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
        if reader is None:
            pairs = ((idx, None) for idx in chunks)
        else:
            pairs = reader.batches(chunks)
        done, last = 0, t0
        for idx, images in pairs:
            self.inputs(make_batch(pset, idx, self.model, device, images=images))
            done += len(idx)
            now = time.time()
            if log is not None and now - last >= progress_every and done < len(todo):
                rate = done / max(now - t0, 1e-9)
                left = int((len(todo) - done) / rate)
                log('encoder inputs: %d/%d particles, %.1f/s, ETA %d:%02d:%02d'
                    % (done, len(todo), rate, left // 3600, left % 3600 // 60, left % 60))
                last = now
        if log is not None and len(todo):
            log('encoder inputs of %d particles computed in %.1f s (cached for every epoch)'
                % (len(todo), time.time() - t0))
        if self.dist is not None:
            # every share on disk, then mapped afresh (another machine's writes
            # are seen by a file opened after them)
            for arr in self.arrays.values():
                arr.flush()
            self.dist.barrier()
            self.arrays = {}
            self._open(False)
        return time.time() - t0

    def inputs(self, batch):
        idx = batch['idx']
        done = self.arrays['done']
        dev = batch['rot'].device
        if not np.all(done[idx]):
            feats, images = self.model.encoder_inputs(batch)
            if feats is not None:
                self.arrays['modes'][idx] = feats.cpu().numpy()
            if images is not None:
                self.arrays['image'][idx] = images.cpu().numpy()
            done[idx] = 1
            return feats, images
        feats = images = None
        if 'modes' in self.arrays:
            feats = torch.as_tensor(np.asarray(self.arrays['modes'][idx]), device=dev)
        if 'image' in self.arrays:
            images = torch.as_tensor(np.asarray(self.arrays['image'][idx]), device=dev)
        return feats, images

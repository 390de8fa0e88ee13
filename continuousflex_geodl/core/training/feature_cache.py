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

    def __init__(self, model_dir, n, model, rank=0, fresh=True):
        os.makedirs(model_dir.cache_dir, exist_ok=True)
        self.model = model
        self.arrays = {}
        shapes = {}
        if model.use_modes:
            shapes['modes'] = (n, model.encoder.n_mode_features)
        if model.use_image:
            shapes['image'] = (n, 2, model.enc_box, model.enc_box)
        shapes['done'] = (n,)
        for name, shape in shapes.items():
            path = model_dir.cache_path(name, rank)
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

    def fill(self, pset, device, batch_size=256, log=None):
        """Compute the encoder inputs of every particle not cached yet, in
        batches of ``batch_size``, before training: the first epoch then
        reads them back like every later one (computing them during the
        first epoch made it about half as fast as the next ones).  Returns
        the wall time (s)."""
        todo = np.nonzero(np.asarray(self.arrays['done']) == 0)[0]
        t0 = time.time()
        for s in range(0, len(todo), batch_size):
            self.inputs(make_batch(pset, todo[s:s + batch_size], self.model, device))
        if log is not None and len(todo):
            log('encoder inputs of %d particles computed in %.1f s (cached for every epoch)'
                % (len(todo), time.time() - t0))
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

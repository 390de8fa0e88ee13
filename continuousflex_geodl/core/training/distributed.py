"""Distributed data parallel: world size / rank from torchrun's environment.

Launched with ``torchrun --nproc_per_node P`` (env ``WORLD_SIZE`` > 1), gloo
on the CPU and nccl on CUDA.  The global batch is split across processes
(rank r takes positions r, r+P, ... of each global batch); gradients are
averaged, so P processes follow the same trajectory as one process at equal
global batch.
"""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


class Dist:
    """World size / rank, initialised from torchrun's environment if present."""

    def __init__(self, device_name='cpu'):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        self.initialised = False
        self.device = None
        if self.world > 1:
            cuda = str(device_name).startswith('cuda')
            if not dist.is_initialized():
                dist.init_process_group('nccl' if cuda else 'gloo')
                self.initialised = True

    @property
    def main(self):
        return self.rank == 0

    def all_sum(self, values):
        """Sum a list of floats over processes."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        dev = self.device
        if dev is not None and dev.type == 'cuda':
            t = t.to(dev)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        """Tear the process group down while the interpreter is fully alive.

        Every process first waits for the others (no collective still in
        flight anywhere), then the objects that hold the group (the DDP
        wrapper's reducer and its bucket tensors, freed by the caller before
        this call; reference cycles collected here) are released and the
        group destroyed.  A group left to the interpreter's finalisation
        is destroyed after Python has stopped giving the GIL to other
        threads: a gloo worker thread releasing a tensor then terminates the
        process ('terminate called without an active exception', about one
        2-process run in 6).
        """
        if self.initialised:
            import gc
            dist.barrier()
            gc.collect()
            dist.destroy_process_group()
            self.initialised = False

    def wrap(self, module, device):
        """``module`` wrapped in DistributedDataParallel when there are several
        processes (buffers are not broadcast: each holds the same ones)."""
        if self.world == 1:
            return module
        ids = [device.index] if device.type == 'cuda' else None
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

"""Distributed data parallel: world size / rank from torchrun's environment.

Launched with ``torchrun --nproc-per-node P`` (env ``WORLD_SIZE`` > 1; the
command lines are built by ``core.launch.launch_command``, one machine or several
through torchrun's c10d rendezvous), gloo on the CPU and nccl on CUDA, where
each process is pinned to GPU ``LOCAL_RANK`` of those visible to it (before
the process group is created, so that nccl and its barriers use that GPU).
The global batch is split across processes (rank r takes positions r, r+P,
... of each global batch of a permutation every process draws from the same
seed: a distributed sampler without communication); gradients are averaged,
so P processes follow the same trajectory as one process at equal global
batch.  Epoch metrics are summed over processes (``all_sum``); decisions that
depend on the clock are taken by rank 0 for everyone (``agree``).
"""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


class Dist:
    """World size / rank, initialised from torchrun's environment if present.

    ``device``: the device this run asked for (``torch.device`` or a name;
    already resolved, e.g. by ``runtime.resolve_device``).  With several
    processes on CUDA, ``self.device`` is GPU ``LOCAL_RANK`` (the current
    device of the process); otherwise it is ``device``.
    """

    def __init__(self, device='cpu'):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        self.initialised = False
        self.device = torch.device(device)
        if self.world > 1:
            cuda = self.device.type == 'cuda'
            if cuda:
                self.device = local_gpu(self.local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                if cuda:
                    _init_nccl(self.device)
                else:
                    dist.init_process_group('gloo')
                self.initialised = True

    @property
    def main(self):
        return self.rank == 0

    def all_sum(self, values):
        """Sum a list of floats over processes."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        if self.device.type == 'cuda':  # nccl reduces CUDA tensors only
            t = t.to(self.device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def agree(self, flag):
        """Rank 0's ``flag`` (bool), on every process: for decisions such as
        stopping at a time limit, which each process's clock could take
        differently (one process leaving the loop while the others wait in a
        collective would hang them)."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
        if self.device.type == 'cuda':
            t = t.to(self.device)
        dist.broadcast(t, 0)
        return bool(t.item() > 0.5)

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
        import warnings
        ids = [device.index] if device.type == 'cuda' else None
        with warnings.catch_warnings():
            # torch >= 2.13 deprecates broadcast_buffers and advises keeping it
            # until an init-only replacement exists: that is this use
            warnings.filterwarnings('ignore', message='.*broadcast_buffers.* is deprecated',
                                    category=FutureWarning)
            return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def local_gpu(local_rank):
    """GPU ``local_rank`` of those visible to this process, or a RuntimeError
    that says how many processes and GPUs there are on this machine."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not 0 <= local_rank < count:
        raise RuntimeError(
            'Process %d of this machine (LOCAL_RANK) has no GPU: %d CUDA GPU(s) are visible '
            '(CUDA_VISIBLE_DEVICES=%s). Start at most one process per GPU (torchrun '
            '--nproc-per-node %d), or list more GPUs in CUDA_VISIBLE_DEVICES.'
            % (local_rank, count, os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'),
               max(count, 1)))
    return torch.device('cuda', local_rank)


def _init_nccl(device):
    """nccl process group bound to ``device`` (``device_id``: torch >= 2.3;
    older versions use the current device, set by the caller)."""
    import inspect
    if 'device_id' in inspect.signature(dist.init_process_group).parameters:
        dist.init_process_group('nccl', device_id=device)
    else:
        dist.init_process_group('nccl')

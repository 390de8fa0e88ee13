"""Command lines that start data-parallel training: ``torchrun`` argv.

One process per GPU (``n_procs`` per machine), ``nnodes`` machines.  The
processes find each other through torchrun's environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``; ``distributed.Dist``): nccl between GPUs, gloo on
the CPU; each process uses GPU ``LOCAL_RANK`` of those visible to it
(``CUDA_VISIBLE_DEVICES``).  Only rank 0 writes the model folder, the run log
and the checkpoints; every process reads the particles and, on resume, the
checkpoint, so on several machines ``--out`` and the inputs must be on a file
system all of them see.

* one machine: ``torchrun --standalone`` (a private rendezvous on a free port);
* several machines: the same command on each machine, ``--nnodes N``, with
  torchrun's c10d rendezvous on one of them (``--rdzv-backend c10d
  --rdzv-endpoint HOST:PORT``, the same ``--rdzv-id`` everywhere); ranks are
  assigned by the rendezvous, so ``--node-rank`` is not needed.

torchrun is started as ``<python> -m torch.distributed.run`` so that it is the
launcher of the interpreter that has continuousflex_geodl (a ``torchrun``
script on the PATH may belong to another environment).  Imports nothing heavy.
"""
import shlex
import sys

#: torchrun, as a module of the interpreter
TORCHRUN_MODULE = 'torch.distributed.run'
#: the package's command-line module (``python -m continuousflex_geodl``)
CLI_MODULE = 'continuousflex_geodl'
#: default port of the c10d rendezvous (torchrun's own default)
DEFAULT_PORT = 29500


def launch_command(n_procs, nnodes=1, node_rank=None, rdzv_endpoint=None, rdzv_id=None,
                   python=None, target=None, max_restarts=None):
    """argv that starts ``n_procs`` processes on this machine (one per GPU).

    ``nnodes`` > 1: this machine is one of ``nnodes`` that run the same
    command; ``rdzv_endpoint`` ('HOST' or 'HOST:PORT', a machine all of them
    reach; port ``DEFAULT_PORT`` when omitted) is required and ``rdzv_id``
    (a job id, default 'continuousflex_geodl') must be the same on every
    machine.  ``node_rank`` (optional) fixes this machine's rank instead of
    letting the rendezvous assign it.  ``python``: the interpreter (default:
    this one).  ``target``: what each process runs, a list of argv words
    (default ``['-m', 'continuousflex_geodl']``; the caller appends the
    command and its options, e.g. ``['train', '--particles', ...]``).
    ``max_restarts``: torchrun restarts of the whole group after a failure
    (torchrun's default, 0, when None).

    One process on one machine needs no launcher: the plain
    ``<python> -m continuousflex_geodl`` is returned.
    """
    n_procs, nnodes = _positive(n_procs, 'n_procs'), _positive(nnodes, 'nnodes')
    python = python or sys.executable
    target = list(target) if target is not None else ['-m', CLI_MODULE]
    if n_procs == 1 and nnodes == 1 and rdzv_endpoint is None:
        return [python] + target
    argv = [python, '-m', TORCHRUN_MODULE]
    if nnodes == 1 and rdzv_endpoint is None:
        argv += ['--standalone', '--nnodes', '1']
    else:
        if not rdzv_endpoint:
            raise ValueError('Training on %d machines needs a rendezvous endpoint '
                             '(rdzv_endpoint: HOST:PORT of one of them, reachable by all).'
                             % nnodes)
        argv += ['--nnodes', str(nnodes), '--rdzv-backend', 'c10d',
                 '--rdzv-endpoint', _endpoint(rdzv_endpoint),
                 '--rdzv-id', str(rdzv_id or CLI_MODULE)]
        if node_rank is not None:
            node_rank = int(node_rank)
            if not 0 <= node_rank < nnodes:
                raise ValueError('node_rank = %d: it must be between 0 and %d (nnodes - 1).'
                                 % (node_rank, nnodes - 1))
            argv += ['--node-rank', str(node_rank)]
    argv += ['--nproc-per-node', str(n_procs)]
    if max_restarts is not None:
        argv += ['--max-restarts', str(int(max_restarts))]
    return argv + target


def format_command(argv):
    """``argv`` as one shell command line (each word quoted as needed)."""
    return ' '.join(shlex.quote(str(w)) for w in argv)


def usage_examples(python='python'):
    """Text for ``train --help``: the launch commands this module builds."""
    train = ['train', '--device', 'cuda', '...']
    one = format_command(launch_command(4, python=python) + train)
    many = format_command(launch_command(4, nnodes=2, rdzv_endpoint='HOST:%d' % DEFAULT_PORT,
                                         rdzv_id='JOB_ID', python=python) + train)
    return ('\nSeveral GPUs (one process per GPU; the global batch --batch-size is split '
            'between them,\nso it must be a multiple of the number of processes)::\n\n'
            '    ' + one + '\n\nSeveral machines (run on each; HOST:PORT on one of them, '
            'reachable by all; --out\nand the inputs on a shared file system; only rank 0 '
            'writes)::\n\n    ' + many + '\n')


def _positive(value, name):
    v = int(value)
    if v != value or v < 1:
        raise ValueError('%s = %r: a positive integer is expected.' % (name, value))
    return v


def _endpoint(value):
    """'HOST' or 'HOST:PORT' -> 'HOST:PORT' (ValueError when malformed)."""
    value = str(value).strip()
    host, sep, port = value.rpartition(':')
    if not sep:
        host, port = value, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("Invalid rendezvous endpoint '%s': HOST:PORT is expected (e.g. "
                         "node01:%d)." % (value, DEFAULT_PORT))
    return '%s:%s' % (host, port)

"""Data-parallel launch: torchrun command lines (checked with torchrun's own
parser and launch configuration), and the process group of ``Dist`` in a
real 2-process torchrun (gloo on the CPU; nccl on 2 GPUs, marked gpu).

The 2-process training run itself (2 processes = 1 process at equal global
batch) is ``test_engine.test_ddp_two_processes_match_one``.
"""
import json
import os
import shlex
import subprocess
import sys

import pytest

from continuousflex_geodl.core.launch import (CLI_MODULE, DEFAULT_PORT, format_command,
                                              launch_command, usage_examples)


def _torchrun_config(argv):
    """(parsed torchrun arguments, torchrun's LaunchConfig) of ``argv``."""
    from torch.distributed.run import config_from_args, get_args_parser
    assert argv[1:3] == ['-m', 'torch.distributed.run']
    args = get_args_parser().parse_args(argv[3:])
    config, cmd, cmd_args = config_from_args(args)
    return args, config, [cmd] + list(cmd_args)


def test_one_process_needs_no_launcher():
    assert launch_command(1, python='/opt/py') == ['/opt/py', '-m', CLI_MODULE]
    assert launch_command(1, python='py', target=['run.py', 'x']) == ['py', 'run.py', 'x']


def test_four_gpus_of_one_machine():
    argv = launch_command(4, python=sys.executable)
    args, config, cmd = _torchrun_config(argv)
    assert args.standalone and args.module and args.training_script == CLI_MODULE
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (1, 1, 4)
    assert config.max_restarts == 0  # (--standalone: torchrun's private c10d rendezvous)
    # each worker runs ``python -m continuousflex_geodl`` + the appended command
    assert cmd == [sys.executable, '-u', '-m', CLI_MODULE]


def test_several_machines_use_the_c10d_rendezvous():
    argv = launch_command(4, nnodes=3, rdzv_endpoint='node01:29400', rdzv_id='job7',
                          python=sys.executable) + ['train', '--device', 'cuda']
    args, config, cmd = _torchrun_config(argv)
    assert not args.standalone
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (3, 3, 4)
    assert (config.rdzv_backend, config.rdzv_endpoint, config.run_id) == \
        ('c10d', 'node01:29400', 'job7')
    assert cmd[-3:] == ['train', '--device', 'cuda']
    # the port defaults to torchrun's; a fixed node rank and restarts are passed on
    argv = launch_command(2, nnodes=2, rdzv_endpoint='head', node_rank=1, max_restarts=3,
                          python=sys.executable)
    args, config, _ = _torchrun_config(argv)
    assert config.rdzv_endpoint == 'head:%d' % DEFAULT_PORT
    assert args.node_rank == 1 and config.max_restarts == 3
    assert '--rdzv-id' in argv and argv[argv.index('--rdzv-id') + 1] == CLI_MODULE


@pytest.mark.parametrize('kwargs, message', [
    (dict(n_procs=2, nnodes=2), 'rendezvous endpoint'),
    (dict(n_procs=2, nnodes=2, rdzv_endpoint='node01:http'), 'Invalid rendezvous'),
    (dict(n_procs=2, nnodes=2, rdzv_endpoint=':29500'), 'Invalid rendezvous'),
    (dict(n_procs=2, nnodes=2, rdzv_endpoint='h:1', node_rank=2), 'node_rank'),
    (dict(n_procs=0), 'n_procs'),
    (dict(n_procs=1.5), 'n_procs'),
    (dict(n_procs=2, nnodes=0), 'nnodes'),
])
def test_bad_launch_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        launch_command(**kwargs)


def test_command_line_round_trip_and_docs():
    argv = launch_command(2, python='/opt/my env/bin/python') + ['train', '--out', "a b'c"]
    assert shlex.split(format_command(argv)) == argv
    text = usage_examples()
    one = format_command(launch_command(4, python='python'))
    assert one in text and '--rdzv-backend c10d --rdzv-endpoint HOST:%d' % DEFAULT_PORT in text
    # the train command's help shows them
    from continuousflex_geodl.core.commands import train
    assert one in train.__doc__


def test_one_process_has_no_group():
    from continuousflex_geodl.core.training.distributed import Dist
    d = Dist('cpu')
    assert (d.world, d.rank, d.main, d.initialised) == (1, 0, True, False)
    assert d.all_sum([1.5, 2.0]) == [1.5, 2.0] and d.agree(True) and not d.agree(False)
    d.barrier()
    d.close()


def test_a_process_without_its_gpu_is_told_why(monkeypatch):
    import torch
    from continuousflex_geodl.core.training.distributed import local_gpu
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', 'test-list')
    with pytest.raises(RuntimeError, match=r'Process %d of this machine .* %d CUDA GPU\(s\) '
                       r'are visible \(CUDA_VISIBLE_DEVICES=test-list\)' % (n, n)):
        local_gpu(n)


# Each rank reports what its process group computed; rank 0's flag differs
# from the others' so that ``agree`` must broadcast it.
GROUP_SCRIPT = r'''
import json, os, sys
import torch
from continuousflex_geodl.core.training.distributed import Dist
d = Dist(sys.argv[2])
r = d.rank
report = dict(world=d.world, rank=r, local_rank=d.local_rank, device=str(d.device),
              current=torch.cuda.current_device() if d.device.type == 'cuda' else None,
              sum=d.all_sum([1.0, r, r * r]), stop=d.agree(r == 0), go=d.agree(r != 0))
d.barrier()
d.close()
with open(os.path.join(sys.argv[1], 'rank%d.json' % r), 'w') as f:
    json.dump(report, f)
'''


def _run_group(tmp_path, n, device):
    script = tmp_path / 'group.py'
    script.write_text(GROUP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    argv = launch_command(n, target=[str(script), str(tmp_path), device])
    proc = subprocess.run(argv, env=env, timeout=240, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.load(open(tmp_path / ('rank%d.json' % r))) for r in range(n)]


def test_two_cpu_processes_sum_and_agree_through_gloo(tmp_path):
    """torchrun (as ``launch_command`` builds it), 2 gloo processes: metrics
    summed over ranks, rank 0's decision taken by both, clean exit."""
    reports = _run_group(tmp_path, 2, 'cpu')
    for r, rep in enumerate(reports):
        assert (rep['world'], rep['rank'], rep['local_rank'], rep['device']) == (2, r, r, 'cpu')
        assert rep['sum'] == [2.0, 1.0, 1.0]
        assert rep['stop'] is True and rep['go'] is False


@pytest.mark.gpu
def test_two_gpus_one_process_each_through_nccl(tmp_path):
    """2 nccl processes, each pinned to GPU LOCAL_RANK."""
    import torch
    if torch.cuda.device_count() < 2:
        pytest.skip('needs 2 CUDA GPUs (%d here)' % torch.cuda.device_count())
    reports = _run_group(tmp_path, 2, 'cuda')
    for r, rep in enumerate(reports):
        assert (rep['device'], rep['current']) == ('cuda:%d' % r, r)
        assert rep['sum'] == [2.0, 1.0, 1.0]
        assert rep['stop'] is True and rep['go'] is False


@pytest.mark.gpu
def test_train_command_on_two_gpus(tmp_path):
    """``continuousflex-geodl train --device cuda`` on 2 GPUs (torchrun, nccl)
    follows the 1-GPU run at equal global batch; rank 0 alone writes the run
    log; the two processes share one encoder-input cache."""
    import torch
    if torch.cuda.device_count() < 2:
        pytest.skip('needs 2 CUDA GPUs (%d here)' % torch.cuda.device_count())
    from continuousflex_geodl.core.models.toydata import write_toy_dataset
    write_toy_dataset(str(tmp_path), pdb=True, n=64, box=24, apix=5.0, n_atoms=50,
                      snr=1.0, seed=1)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    hist = {}
    for n in (1, 2):
        out = str(tmp_path / ('model%d' % n))
        argv = launch_command(n) + [
            'train', '--device', 'cuda', '--particles', str(tmp_path / 'particles.star'),
            '--reference', str(tmp_path / 'ref.npz'), '--out', out, '--zdim', '2',
            '--epochs', '2', '--batch-size', '16', '--threads', '1']
        proc = subprocess.run(argv, env=env, timeout=600, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        hist[n] = json.load(open(os.path.join(out, 'history.json')))
        assert os.path.exists(os.path.join(out, 'weights.pt'))
        with open(os.path.join(out, 'run.log')) as f:
            assert f.read().count('command: continuousflex-geodl train') == 1
    assert not os.path.exists(str(tmp_path / 'model2' / 'cache' / 'encoder_done.rank1.npy'))
    # the same trajectory up to reduction order and cuDNN's TF32 convolutions
    # (~1e-3 relative per operation; on the CPU the test_engine DDP test holds 1e-4)
    for a, b in zip(hist[1], hist[2]):
        assert abs(a['loss'] - b['loss']) <= 1e-2 * abs(a['loss']), (a['loss'], b['loss'])

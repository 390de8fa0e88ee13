"""Shared helpers of the benchmark: measured subprocesses, atomic files, JSON.

``run_measured`` runs one command as a child process and reports its wall
time and the peak resident memory of the whole process tree (the child and
all its descendants, summed, polled with psutil every ``poll`` seconds, 0.5 by default), so
the figures of every tool are measured the same way.
"""
import json
import os
import shlex
import subprocess
import sys
import time

from continuousflex_geodl.core.fileio import atomic_write_text  # noqa: F401 (used by the benchmarks)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.path.join(HERE, 'work')
REPORT = os.path.join(HERE, 'report')


class StageUnavailable(RuntimeError):
    """A benchmark stage cannot run because a tool or input is missing."""


def _jsonable(x):
    try:
        import numpy as np
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (x != x or x in (float('inf'), float('-inf'))):
        return None
    return x


def write_json(path, obj):
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True))


def read_json(path, default=None):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def thread_env(threads, extra=None, wait_policy='PASSIVE'):
    """Environment for a child process limited to ``threads`` CPU threads.

    Sets ``OMP_NUM_THREADS`` (and MKL/OpenBLAS) to ``threads`` and
    ``OMP_WAIT_POLICY`` to ``wait_policy`` for the child and everything it
    starts: ``'PASSIVE'`` (idle OpenMP threads sleep; what our CLI sets for
    itself, robust when other work shares the cores) or ``'ACTIVE'`` (idle
    threads spin: faster for some programs on an otherwise idle machine,
    much slower when a core is busy).  None leaves the policy unset (the
    OpenMP runtime's default).
    """
    env = dict(os.environ)
    for key in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        env[key] = str(int(threads))
    if wait_policy:
        env['OMP_WAIT_POLICY'] = str(wait_policy).upper()
    else:
        env.pop('OMP_WAIT_POLICY', None)
    env.setdefault('MPLBACKEND', 'Agg')
    if extra:
        env.update(extra)
    return env


def _tree_rss(proc):
    """(RSS, anonymous RSS) in bytes summed over ``proc`` and its descendants.

    Anonymous RSS = RSS - file-backed/shared pages (Linux ``shared``): pages of
    memory-mapped files (e.g. a particle stack read through mmap) count in RSS
    but are page cache the kernel can drop; anonymous memory is what a
    process really holds.
    """
    import psutil
    total = anon = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            m = p.memory_info()
            total += m.rss
            anon += m.rss - getattr(m, 'shared', 0)
        except psutil.Error:
            pass
    return total, anon


def run_measured(cmd, log_path, env=None, cwd=None, poll=0.5, timeout=None):
    """Run ``cmd`` (list) with stdout+stderr to ``log_path``; measure it.

    Returns dict(cmd, rc, wall_s, peak_rss_mb, peak_anon_mb (see
    ``_tree_rss``), cpu_s (user + system CPU seconds of the child and the
    descendants it waited for), load_avg_start,
    load_avg_end (1-minute load average of the machine: other work running at
    the same time slows wall-clock figures, not CPU seconds)).  Raises RuntimeError with
    the tail of the log when the command fails.
    """
    import psutil
    import resource
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    peak = peak_anon = 0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log_path, 'w') as log:
        log.write('$ %s\n' % ' '.join(shlex.quote(str(c)) for c in cmd))
        log.flush()
        child = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                 env=env, cwd=cwd)
        proc = psutil.Process(child.pid)
        while True:
            rss, anon = _tree_rss(proc)
            peak, peak_anon = max(peak, rss), max(peak_anon, anon)
            try:
                rc = child.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                if timeout and time.perf_counter() - t0 > timeout:
                    child.kill()
                    child.wait()
                    rc = -9
                    break
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out = dict(cmd=[str(c) for c in cmd], rc=rc, wall_s=wall, peak_rss_mb=peak / 2 ** 20,
               peak_anon_mb=peak_anon / 2 ** 20, cpu_s=cpu, load_avg_start=load0,
               load_avg_end=os.getloadavg()[0])
    if rc != 0:
        raise RuntimeError('Command failed (exit %s) after %.1f s: %s\n--- last lines of %s ---\n%s'
                           % (rc, wall, ' '.join(out['cmd'][:4]), log_path, tail(log_path)))
    return out


def tail(path, n=25):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return ''


def our_cli():
    """Command prefix that runs ``continuousflex-geodl`` with this interpreter."""
    return [sys.executable, '-m', 'continuousflex_geodl.core.cli']


def run_cli(args, log, threads=2, nice=0, cwd=None):
    """Run ``python -m continuousflex_geodl ARGS`` with ``threads`` OpenMP threads
    (sleeping when idle unless OMP_WAIT_POLICY is set), stdout and stderr to
    ``log``, ``nice`` added to the caller's niceness when > 0.  Returns
    (wall s, command line without the nice prefix); RuntimeError with the
    log's tail when the command fails."""
    cmd = [sys.executable, '-m', 'continuousflex_geodl'] + [str(a) for a in args]
    line = ' '.join(cmd)
    print('$ ' + line, flush=True)
    env = thread_env(threads, wait_policy=os.environ.get('OMP_WAIT_POLICY', 'PASSIVE'))
    t = time.time()
    with open(log, 'w') as f:
        proc = subprocess.run((['nice', '-n', str(nice)] if nice else []) + cmd, stdout=f,
                              stderr=subprocess.STDOUT, env=env, cwd=cwd)
    wall = time.time() - t
    if proc.returncode:
        raise RuntimeError('command failed (%d): %s\n%s'
                           % (proc.returncode, line, tail(log, 10 ** 6)[-3000:]))
    return wall, line


def say(*msg):
    print('[bench %s]' % time.strftime('%H:%M:%S'), *msg, flush=True)

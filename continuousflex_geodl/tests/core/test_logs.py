"""Logging: console routing of the core's loggers and the run.log of every command."""
import json
import logging
import os

import numpy as np
import pytest

import continuousflex_geodl
from continuousflex_geodl.core import logs
from continuousflex_geodl.core.cli import main as cli

log = logging.getLogger('continuousflex_geodl.core.test_logs')


@pytest.fixture(scope='module')
def latents(tmp_path_factory):
    d = tmp_path_factory.mktemp('z')
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 3)).astype(np.float32)
    np.save(str(d / 'z.npy'), z)
    np.save(str(d / 'z2.npy'), (z @ rng.normal(size=(3, 3))).astype(np.float32))
    return d


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _message(line):
    """The message of a run.log line (after 'date time LEVEL logger: ')."""
    return line.split(': ', 1)[1]


def test_console_info_to_stdout_warnings_to_stderr(capsys):
    log.info('progress %d/%d', 3, 10)
    log.warning('something to fix')
    log.debug('not shown')
    out = capsys.readouterr()
    assert out.out == 'progress 3/10\n'
    assert out.err == 'WARNING: something to fix\n'


def test_run_log_header_progress_and_exit_status(latents, tmp_path, capsys):
    out = tmp_path / 'diag'
    argv = ['landscape', 'diagnostics', '--latents', str(latents / 'z.npy'),
            '--compare', str(latents / 'z2.npy'), '--out', str(out)]
    assert cli(argv) == 0
    stdout = capsys.readouterr().out
    lines = _lines(out / 'run.log')
    assert _message(lines[0]) == 'command: continuousflex-geodl ' + ' '.join(argv)
    assert _message(lines[1]).startswith('version: continuousflex_geodl %s,'
                                         % continuousflex_geodl.__version__)
    settings = json.loads(_message(lines[3])[len('settings: '):])
    assert settings['latents'] == str(latents / 'z.npy') and settings['seed'] == 0
    assert settings['action'] == 'diagnostics' and 'func' not in settings
    # the progress printed on stdout is in the log too, then the exit status
    progress = [ln for ln in lines if 'agreement: ' in ln]
    assert len(progress) == 1 and _message(progress[0]) in stdout
    assert _message(lines[-1]).startswith('exit status 0 after ')
    # the same command again appends a second run
    assert cli(argv) == 0
    assert sum(ln.split(': ', 1)[1].startswith('command: ') for ln in _lines(out / 'run.log')) == 2


def test_core_module_progress_reaches_the_run_log(latents, tmp_path, capsys):
    out = tmp_path / 'path'
    assert cli(['landscape', 'path', '--latents', str(latents / 'z.npy'), '--out', str(out),
                '--kind', 'pca']) == 0
    stdout = capsys.readouterr().out
    done = [ln for ln in _lines(out / 'run.log')
            if 'core.landscape.pipeline: path: pca path with 10 points' in ln]
    assert len(done) == 1 and _message(done[0]) in stdout


def test_refused_command_leaves_no_folder_and_errors_are_logged(latents, tmp_path, capsys):
    out = tmp_path / 'never'
    assert cli(['landscape', 'diagnostics', '--latents', str(latents / 'z.npy'),
                '--out', str(out)]) == 2
    assert 'ERROR: Nothing to compute' in capsys.readouterr().err
    assert not os.path.exists(out)
    # into an existing folder, the error and the status are in its run.log
    assert cli(['landscape', 'path', '--latents', str(latents / 'z.npy'), '--out',
                str(tmp_path), '--landscape', str(tmp_path / 'missing')]) == 2
    lines = _lines(tmp_path / 'run.log')
    assert any('ERROR' in ln and 'Landscape folder not found' in ln for ln in lines)
    assert _message(lines[-1]).startswith('exit status 2 after ')


def test_file_outputs_get_a_log_beside_them_and_other_ranks_none(tmp_path, monkeypatch):
    z = tmp_path / 'z.npy'
    assert logs.run_log_path(str(z), is_file=True) == str(z) + '.log'
    with logs.command_session(['infer', '--out', str(z)]) as session:
        handler = logs.start_run_log(str(z), settings={'batch_size': 8}, is_file=True)
        log.info('inferred 8/8')
        logs.end_session(session, 0)
    lines = _lines(str(z) + '.log')
    assert _message(lines[0]) == 'command: continuousflex-geodl infer --out %s' % z
    assert _message(lines[3]) == 'settings: {"batch_size": 8}'
    assert _message(lines[4]) == 'inferred 8/8'
    assert handler not in logging.getLogger(logs.CORE_LOGGER).handlers  # closed at the end
    monkeypatch.setenv('RANK', '1')
    assert logs.start_run_log(str(tmp_path / 'rank1'), settings={}) is None
    log.info('not written')
    assert not os.path.exists(tmp_path / 'rank1')

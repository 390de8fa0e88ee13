"""Logging of the core: progress on the console and a ``run.log`` in every output folder.

Every core module logs through its own ``logger = logging.getLogger(__name__)``
(all under the ``continuousflex_geodl.core`` logger); none calls ``print``.

* Console (set up when ``continuousflex_geodl.core`` is imported): INFO
  messages go to standard output as they are (the Scipion protocols show
  the worker's standard output in their log), warnings and errors to
  standard error as ``WARNING: message`` / ``ERROR: message``.  The
  handlers write to the *current* ``sys.stdout`` / ``sys.stderr``, so
  redirection (and pytest's capture) sees them.
* ``run.log`` (``start_run_log``): each command of ``continuousflex-geodl``
  calls it once it knows its output, with its parsed arguments.  The log
  starts with the command line, the package version and the settings (one
  JSON line), then every message of the run with a time stamp, and ends
  with the exit status.  Output folders (train, decode, simulate,
  landscape ..., demo) get ``FOLDER/run.log``; commands whose ``--out`` is a
  file (infer's ``z.npy``, reference's ``ref.npz``, poses' ``posed.star``) get
  ``FILE.log`` beside it (``run_log_path``).  A later run into the same
  folder (e.g. ``train --resume``) appends to it.  Messages logged before the output folder
  exists are kept and written once it does, so a command refused before it
  wrote anything leaves no folder behind.  Only the process of rank 0
  writes it (``RANK`` of torchrun).
"""
import contextlib
import json
import logging
import os
import shlex
import sys
import time

from .settings import package_version

#: the log of a command, in its output folder
RUN_LOG = 'run.log'
#: the logger every core module logs under
CORE_LOGGER = 'continuousflex_geodl.core'
FILE_FORMAT = '%(asctime)s %(levelname)-7s %(name)s: %(message)s'

_core = logging.getLogger(CORE_LOGGER)
#: command lines and run-log handlers of the commands running in this process
_sessions = []


class _ConsoleHandler(logging.StreamHandler):
    """StreamHandler on the current ``sys.<name>`` (looked up at each message)."""

    def __init__(self, which):
        self._which = which
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self._which)

    @stream.setter
    def stream(self, value):
        pass  # always the current sys.stdout / sys.stderr


def setup_console(level=logging.INFO):
    """Console handlers of the core logger (idempotent)."""
    if any(isinstance(h, _ConsoleHandler) for h in _core.handlers):
        return
    out = _ConsoleHandler('stdout')
    # progress (INFO) from the process of rank 0 only (torchrun runs the command in each)
    out.addFilter(lambda r: r.levelno < logging.WARNING
                  and os.environ.get('RANK', '0') in ('', '0'))
    out.setFormatter(logging.Formatter('%(message)s'))
    err = _ConsoleHandler('stderr')
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
    _core.addHandler(out)
    _core.addHandler(err)
    _core.setLevel(level)
    _core.propagate = False  # printed once, whatever the application configures


class RunLogHandler(logging.Handler):
    """Appends formatted records to ``path``; records that come before the
    folder of ``path`` exists are buffered and written once it does (and
    dropped at ``close`` if it never does)."""

    def __init__(self, path, level=logging.INFO):
        super().__init__(level)
        self.path = os.path.abspath(os.fspath(path))
        self._pending = []
        self._fh = None
        self.setFormatter(logging.Formatter(FILE_FORMAT))

    def _open(self):
        if self._fh is None and os.path.isdir(os.path.dirname(self.path)):
            self._fh = open(self.path, 'a', encoding='utf-8')
            self._fh.writelines(self._pending)
            self._pending = []
        return self._fh

    def emit(self, record):
        try:
            line = self.format(record) + '\n'
            self.acquire()
            try:
                fh = self._open()
                if fh is None:
                    self._pending.append(line)
                else:
                    fh.write(line)
                    fh.flush()
            finally:
                self.release()
        except Exception:  # noqa: BLE001 -- logging must never stop a run
            self.handleError(record)

    def close(self):
        self.acquire()
        try:
            with contextlib.suppress(OSError):
                if self._open() is not None:
                    self._fh.close()
            self._fh, self._pending = None, []
        finally:
            self.release()
        super().close()


def run_log_path(out, is_file=False):
    """``OUT/run.log`` for an output folder, ``OUT.log`` for an output file."""
    out = os.path.abspath(os.fspath(out))
    return out + '.log' if is_file else os.path.join(out, RUN_LOG)


def settings_of(args):
    """The parsed arguments as a JSON-ready dict (functions and private keys left out)."""
    d = vars(args) if hasattr(args, '__dict__') else dict(args or {})
    return {k: v for k, v in sorted(d.items()) if not k.startswith('_') and not callable(v)}


@contextlib.contextmanager
def command_session(argv, prog='continuousflex-geodl'):
    """Context of one command run by ``core.cli.main``: remembers its command
    line for ``start_run_log`` and closes the run logs it opened (the exit
    status is logged by ``end_session``)."""
    session = dict(command=' '.join([prog] + [shlex.quote(str(a)) for a in argv]),
                   handlers=[], t0=time.time())
    _sessions.append(session)
    try:
        yield session
    finally:
        _sessions.remove(session)
        for h in session['handlers']:
            stop_run_log(h)


def _record(msg, level=logging.INFO, exc_info=None):
    return logging.makeLogRecord(dict(name=CORE_LOGGER, levelno=level,
                                      levelname=logging.getLevelName(level), msg=msg,
                                      exc_info=exc_info))


def end_session(session, status, exc_info=None):
    """Log how the command ended (``status`` 0 = success; ``exc_info`` of an
    unexpected error, whose traceback Python prints anyway) into its run logs
    only."""
    for h in session['handlers']:
        if exc_info is not None:
            h.handle(_record('unexpected error', logging.ERROR, exc_info))
        h.handle(_record('exit status %s after %.1f s' % (status, time.time() - session['t0'])))


def start_run_log(out, args=None, is_file=False, settings=None):
    """Start the run log of a command whose output is ``out`` (a folder, or a
    file with ``is_file``).  Writes the header (command line, version,
    settings: ``args``' values, or ``settings``) and from then on every
    message of the core.  Returns the handler (None on ranks other than 0);
    it is closed when the command ends, or by ``stop_run_log``."""
    if int(os.environ.get('RANK', '0') or 0) != 0:
        return None
    handler = RunLogHandler(run_log_path(out, is_file))
    session = _sessions[-1] if _sessions else None
    command = session['command'] if session else ' '.join(
        shlex.quote(a) for a in [os.path.basename(sys.argv[0])] + sys.argv[1:])
    values = settings if settings is not None else settings_of(args)
    for msg in ('command: %s' % command,
                'version: continuousflex_geodl %s, python %s' % (
                    package_version(), sys.version.split()[0]),
                'working directory: %s' % os.getcwd(),
                'settings: %s' % json.dumps(values, sort_keys=True, default=str)):
        handler.handle(_record(msg))
    _core.addHandler(handler)
    if session is not None:
        session['handlers'].append(handler)
    return handler


def stop_run_log(handler):
    """Detach and close a handler from ``start_run_log`` (None is ignored)."""
    if handler is None:
        return
    _core.removeHandler(handler)
    handler.close()


setup_console()

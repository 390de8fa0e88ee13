"""Training checkpoints of a model folder: ``checkpoints/last.pt`` after every
epoch, ``checkpoints/previous.pt`` the one before it.

Every file is written atomically (``core.fileio``), so ``last.pt`` is
complete unless the disk or a copy damaged it; resuming then falls back to
``previous.pt`` (one epoch earlier).  File names and the checkpoint format
are those of ``core.artifacts.ModelDir``.
"""
import logging
import os

from .. import fileio
from ..artifacts import ModelDir

logger = logging.getLogger(__name__)


def save_checkpoint(state, out_dir):
    """Write ``checkpoints/last.pt`` atomically, keeping the one before it as
    ``checkpoints/previous.pt`` (a hard link when possible: no copy).
    ``state``: dict with ``model``, ``optim``, ``epoch``, ``history``."""
    md = ModelDir(out_dir)
    if os.path.exists(md.last_checkpoint_path):
        fileio.atomic_copy(md.last_checkpoint_path, md.previous_checkpoint_path)
    md.write_checkpoint(state)


def remove_interrupted_writes(out_dir):
    """Remove temporary files left in the checkpoints folder by writes that
    were interrupted (they are never loaded)."""
    folder = ModelDir(out_dir).checkpoints_dir
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if '.tmp' in name:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def load_checkpoint(out_dir):
    """The last complete checkpoint of ``out_dir`` (dict), or None if there is none.

    Checkpoints are written atomically, so ``last.pt`` is complete unless the
    disk or a copy damaged it; then ``previous.pt`` (one epoch earlier) is
    used, with a warning.  Temporary files of interrupted writes are never
    loaded (they are removed).  ValueError when no checkpoint is usable.
    """
    md = ModelDir(out_dir)
    remove_interrupted_writes(out_dir)
    last, prev = md.last_checkpoint_path, md.previous_checkpoint_path
    if not os.path.exists(last):
        return None
    problems = []
    for path in (last, prev):
        if not os.path.exists(path):
            continue
        try:
            state = md.read_checkpoint(path)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if path != last:
            logger.warning('%s Resuming from the checkpoint before it (%s, epoch %d).',
                           problems[0], path, int(state['epoch']))
        return state
    raise ValueError('Cannot resume the training in %s: no usable checkpoint. %s Delete the '
                     'checkpoints folder to start again from scratch, or train into a new '
                     'folder.' % (out_dir, ' '.join(problems)))

"""The training engine's public names, kept for existing callers.

The code lives in ``core.training`` (one concept per module):

* ``training.trainer``       -- ``train()`` and its steps, ``write_refined_poses``;
* ``training.config``        -- ``TRAIN_DEFAULTS``, ``default_settings``, ``split_settings``;
* ``training.checkpoints``   -- ``save_checkpoint`` / ``load_checkpoint``;
* ``training.distributed``   -- ``Dist`` (torchrun DDP);
* ``training.calibration``   -- ``calibrate``;
* ``training.objective``     -- the loss module;
* ``training.feature_cache`` -- ``FeatureCache``;
* ``training.schedule``      -- learning-rate schedule, seeded random streams;

``build_model`` is in ``models.flexmodel``, ``loss_weights`` in ``losses``,
the atomic writers in ``fileio`` and the model folder's files in
``artifacts.ModelDir``.
"""
from .artifacts import ModelDir  # noqa: F401
from .fileio import atomic_savez, atomic_torch_save, atomic_write_text  # noqa: F401
from .losses import loss_weights  # noqa: F401
from .models.flexmodel import build_model  # noqa: F401
from .training.calibration import calibrate  # noqa: F401
from .training.checkpoints import load_checkpoint, save_checkpoint  # noqa: F401
from .training.config import TRAIN_DEFAULTS, default_settings, split_settings  # noqa: F401
from .training.distributed import Dist  # noqa: F401
from .training.feature_cache import FeatureCache  # noqa: F401
from .training.trainer import train, write_refined_poses  # noqa: F401

__all__ = ['TRAIN_DEFAULTS', 'Dist', 'FeatureCache', 'ModelDir', 'atomic_savez',
           'atomic_torch_save', 'atomic_write_text', 'build_model', 'calibrate',
           'default_settings', 'load_checkpoint', 'loss_weights', 'save_checkpoint',
           'split_settings', 'train', 'write_refined_poses']

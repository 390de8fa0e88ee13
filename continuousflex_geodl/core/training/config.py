"""Training settings: ``TRAIN_DEFAULTS`` and the split of a flat settings dict
into model settings (``models.flexmodel.MODEL_DEFAULTS``) and training ones
(``default_settings`` / ``split_settings`` live in ``core.settings``: reading a
trained model must not import the training package)."""
from ..settings import TrainSettings, default_settings, split_settings  # noqa: F401

#: training settings (the model settings are ``models.flexmodel.MODEL_DEFAULTS``);
#: defined, with units and help, in ``core.settings.TrainSettings``
TRAIN_DEFAULTS = TrainSettings.defaults()

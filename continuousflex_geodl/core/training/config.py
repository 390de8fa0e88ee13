"""Training settings: ``TRAIN_DEFAULTS`` and the split of a flat settings dict
into model settings (``models.flexmodel.MODEL_DEFAULTS``) and training ones."""
from ..settings import ModelSettings, TrainSettings

#: training settings (the model settings are ``models.flexmodel.MODEL_DEFAULTS``);
#: defined, with units and help, in ``core.settings.TrainSettings``
TRAIN_DEFAULTS = TrainSettings.defaults()


def default_settings():
    """Every model and training setting with its default (flat dict)."""
    out = ModelSettings.defaults()
    out.update(TRAIN_DEFAULTS)
    return out


def split_settings(settings):
    """(model settings, training settings with defaults filled in) of a flat
    dict; ValueError naming unknown keys."""
    model_defaults = ModelSettings.defaults()
    unknown = set(settings) - set(model_defaults) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ValueError('Unknown training setting(s): %s' % ', '.join(sorted(unknown)))
    model_cfg = {k: v for k, v in settings.items() if k in model_defaults}
    train_cfg = dict(TRAIN_DEFAULTS)
    train_cfg.update({k: v for k, v in settings.items() if k in TRAIN_DEFAULTS})
    return model_cfg, train_cfg

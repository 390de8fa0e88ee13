"""Training of the conformational model (``train``: see ``trainer``).

Modules
-------
``config``         ``TRAIN_DEFAULTS``, ``default_settings``, ``split_settings``.
``trainer``        ``train()``: the loop, as a sequence of named steps.
``checkpoints``    rotating ``checkpoints/last.pt`` / ``previous.pt``, resume.
``distributed``    ``Dist``: world size / rank, all-reduce, barriers (torchrun;
                   command lines: ``core.launch``).
``calibration``    intensity scale, noise variance, encoder input statistics.
``objective``      the loss module (data term, rate, strain, Sinkhorn, pose).
``feature_cache``  encoder inputs memory-mapped on disk.
``loader``         particle images of the next batches read (and cropped) in the background.
``schedule``       learning-rate schedule and seeded random streams.

The model folder's files are read and written through ``core.artifacts.ModelDir``.
"""

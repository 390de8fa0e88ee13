"""The conformational model: encoder, point-cloud decoder, latent prior.

Modules
-------
``flexmodel``  ``FlexModel``: reference cloud + encoder + decoder + prior
               (+ per-particle pose corrections); ``MODEL_DEFAULTS``.
``encoder``    amortised encoder (linearised normal-mode projections of the
               particle, CTF- and pose-aware; de-rotated phase-flipped image
               with the reference projection; MLP / CNN).
``decoder``    ``PointDecoder`` (point network over the reference: kernel
               point convolutions on the kNN graph, z-conditioned segment
               rigid motions + low-rank free-form field) and ``ModeDecoder``
               (elastic-network normal-mode basis, DeepHEMNMA bridge).
``prior``      cryoTWIN trainable Gaussian-mixture prior with the box rate
               ``-log Q(z)``; VAE Gaussian prior with the KL rate.
``pose``       per-particle rotation / shift corrections.
``nma``        anisotropic-network normal modes (own Hessian eigensolver).
``imaging``    Fourier-space image handling (crop, CTF, shifts, de-rotation,
               mode Jacobians of projections).
``data``       mini-batches streamed from (memory-mapped) particle stacks.
``reference``  reference cloud from an atomic model, a map or an .npz.
``toydata``    a tiny in-memory hinge data set for tests.

Default latent dimension: 4.  The latent should hold the few collective
motions the data can resolve; with a few thousand particles at SNR ~0.1 a
larger latent mostly adds noise dimensions (on the project's 2,000-particle
bar data the first principal axis ranks particles equally well at K = 1 and
K = 4, close to the information bound), while 4 leaves room for more than
one independent motion on real data.  The cryoTWIN setting (K = 8, C = 100,
T = 3, beta = 1/8) is two options away (``--zdim 8 --beta 0.125``); the
default beta is 1 (``core.settings.TrainSettings``), the weight every
benchmark was measured with.
"""

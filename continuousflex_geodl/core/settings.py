"""Typed settings: the one place where every default and every choice list lives.

Each group of settings is a frozen dataclass whose fields carry the default,
a help text and a unit (``dataclasses.fields(cls)[i].metadata``).  The
command line (``core.commands``), the Scipion forms (``protocols``), the
core functions and ``constants.py`` take their defaults and choices from
here; ``tests/core/test_settings.py`` compares all of them and fails on any
difference.

=========================  ====================================================
``ModelSettings``          the model (saved in config.json; rebuilds the network)
``TrainSettings``          the training run (saved in config.json too)
``ReferenceSettings``      pseudo-atom reference from a model or a map
``InferSettings``          latents of a particle set (encoder + latent refinement)
``PoseSettings``           global pose search without starting angles
``RuntimeSettings``        device and CPU threads of every command
``SimulateSettings``       synthetic particle sets with ground truth
``LandscapeSettings``      embedding, free energy and states (``landscape analyze``)
``PathSettings``           pathways (``landscape path``)
``ExploreSettings``        the interactive landscape explorer (``explore``)
``DiagnosticsSettings``    isometry and agreement measures
``ValidateSettings``       half-set validation (``validate``)
=========================  ====================================================

Choice lists are ``str`` enums (``Prior.GMM == 'gmm'``, JSON-able as their
value); ``Choice.values()`` gives the list in the order the Scipion forms
use (an EnumParam stores the index).

``config.json`` of a model holds ``ModelSettings`` + ``TrainSettings``
(flat, as ``MODEL_DEFAULTS`` / ``TRAIN_DEFAULTS``) and the provenance keys
``config_schema``, ``package_version`` and ``command_line``
(``with_provenance``); every reader passes it through ``migrate_config``,
which brings the config of an older model folder to the current schema.

Standard library only: Scipion protocols import this module, and must not
load numpy or torch.
"""
import dataclasses
import enum
import sys
from dataclasses import dataclass, field


# ----------------------------------------------------------------- choices --
class Choice(str, enum.Enum):
    """A choice list.  Members are strings equal to their value."""

    def __str__(self):
        return self.value

    @classmethod
    def values(cls):
        """The values, in the order of the Scipion EnumParam indices."""
        return [m.value for m in cls]

    @classmethod
    def labels(cls):
        """What a Scipion form shows for each value (same order)."""
        return [_LABELS.get((cls.__name__, m.value), m.value) for m in cls]

    @classmethod
    def parse(cls, value):
        """The member for ``value`` (a member, its value, any case); a clear
        ValueError otherwise."""
        if isinstance(value, cls):
            return value
        text = str(value).strip()
        for m in cls:
            if m.value == text or m.value.lower() == text.lower():
                return m
        raise ValueError("Unknown %s '%s': use %s." % (
            _words(cls.__name__), value, ', '.join(cls.values())))

    @classmethod
    def index(cls, value):
        """Position of ``value`` in ``values()`` (a Scipion EnumParam value)."""
        return cls.values().index(cls.parse(value).value)

    @classmethod
    def at(cls, index):
        """The value at a Scipion EnumParam index."""
        return cls.values()[int(index)]


def _words(name):
    out = ''.join(' ' + c.lower() if c.isupper() else c for c in name).strip()
    return out


class Prior(Choice):
    GMM = 'gmm'              # cryoTWIN trainable Gaussian mixture, rate -log Q(z)
    GAUSSIAN = 'gaussian'    # standard normal, VAE KL rate


class Decoder(Choice):
    FREE = 'free'            # point-network displacement field
    NMA = 'nma'              # displacements in a normal-mode basis


class DecoderConditioning(Choice):
    SEGMENTS = 'segments'
    LOWRANK = 'lowrank'
    FILM = 'film'


class EncoderInputs(Choice):
    MODES_IMAGE = 'modes+image'
    MODES = 'modes'
    IMAGE = 'image'


class Loss(Choice):
    NLL = 'nll'              # Fourier-weighted Gaussian negative log-likelihood
    CORR = 'corr'            # correlation


class Motion(Choice):
    HINGE = 'hinge'
    LINEAR = 'linear'
    NMA = 'nma'


class Population(Choice):
    THREE_MODE = 'three_mode'
    UNIFORM = 'uniform'
    GRID = 'grid'


class EmbeddingMethod(Choice):
    PCA = 'pca'
    UMAP = 'umap'
    TSNE = 'tsne'


class StateMethod(Choice):
    GMM = 'gmm'
    KMEANS = 'kmeans'


class StateCount(Choice):
    """Rules for the number of states (besides a number)."""
    AUTO = 'auto'            # free-energy basins
    BIC = 'bic'              # Gaussian components chosen by BIC


class EnergyUnit(Choice):
    KT = 'kT'
    KCAL_MOL = 'kcal/mol'
    KJ_MOL = 'kJ/mol'


class Bandwidth(Choice):
    """KDE bandwidth rules (besides a number)."""
    SCOTT = 'scott'
    SILVERMAN = 'silverman'
    CV = 'cv'                # likelihood cross-validation (landscape.density)


class MapKernel(Choice):
    """How the map's kernel width varies over the map (landscape.density)."""
    ADAPTIVE = 'adaptive'    # Abramson's square-root law on a fixed-width pilot
    FIXED = 'fixed'          # one width everywhere


class PathKind(Choice):
    DENSITY = 'density'      # minimum free-energy path through a kNN graph
    RIDGELINE = 'ridgeline'  # cryoTWIN ridgeline between mixture components
    PCA = 'pca'              # along a principal axis


class ExplorePathKind(Choice):
    """Paths drawn in the explorer (``core.landscape.explore``)."""
    DRAWN = 'drawn'          # along the clicked polyline on the map
    DENSITY = 'density'      # minimum free-energy path between its first and last points


class AlignMethod(Choice):
    """How the latent space of one half-set model is mapped onto the other's
    (``core.validation``)."""
    PROCRUSTES = 'procrustes'  # rotation (or reflection), one scale and a shift
    LINEAR = 'linear'          # any affine map (least squares)


class ExploreInverse(Choice):
    """From a map point back to a latent in the explorer."""
    AUTO = 'auto'            # PCA inverse on PCA maps, nearest particles' median otherwise
    NEIGHBOURS = 'neighbours'  # always the median of the nearest particles


#: what a Scipion form shows, by (choice list, value), when not the value itself
#: (keys are not members: members of different lists with the same value are equal)
_LABELS = {
    ('Prior', 'gmm'): 'gmm (cryoTWIN trainable mixture)',
    ('Prior', 'gaussian'): 'gaussian (VAE)',
}

#: every choice list, by name
CHOICES = {c.__name__: c for c in (Prior, Decoder, DecoderConditioning, EncoderInputs, Loss,
                                   Motion, Population, EmbeddingMethod, StateMethod, StateCount,
                                   EnergyUnit, Bandwidth, MapKernel, PathKind, ExplorePathKind,
                                   ExploreInverse, AlignMethod)}


# ---------------------------------------------------------------- settings --
def _f(default, help, unit=None, choices=None):
    """A settings field: default, help text, unit, and the Choice class when
    the value is one of a list."""
    return field(default=default, metadata=dict(help=help, unit=unit, choices=choices))


class _Settings:
    """Class-level helpers of every settings dataclass."""

    @classmethod
    def names(cls):
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_info(cls, name):
        for f in dataclasses.fields(cls):
            if f.name == name:
                return f
        raise KeyError('%s has no setting %r' % (cls.__name__, name))

    @classmethod
    def default(cls, name):
        """The default of ``name`` as a plain value (an enum as its string)."""
        return _plain(cls.field_info(name).default)

    @classmethod
    def defaults(cls):
        """{name: default} with plain values (JSON-able)."""
        return {f.name: _plain(f.default) for f in dataclasses.fields(cls)}

    @classmethod
    def choices(cls, name):
        """The Choice class of ``name``, or None."""
        return cls.field_info(name).metadata.get('choices')

    @classmethod
    def help(cls, name, default=True):
        """Help text of ``name`` with its unit and (``default``) its default,
        as the command line shows it."""
        md = cls.field_info(name).metadata
        text = md['help']
        if md.get('unit'):
            text += ' [%s]' % md['unit']
        if default:
            d = cls.default(name)
            if d is not None and d is not False:
                text += ' (default %s)' % _fmt(d)
        return text

    @classmethod
    def sentence(cls, name):
        """The help text as a sentence, with its unit (for a Scipion form)."""
        text = cls.help(name, default=False)
        return text[:1].upper() + text[1:] + '.'

    @classmethod
    def unit(cls, name):
        return cls.field_info(name).metadata.get('unit')

    def as_dict(self):
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _fmt(value):
    if isinstance(value, (tuple, list)):
        return ' '.join(_fmt(v) for v in value)
    if isinstance(value, float):
        return '%g' % value
    return str(value)


@dataclass(frozen=True)
class ModelSettings(_Settings):
    """The model: saved in config.json, enough to rebuild the network."""
    zdim: int = _f(4, 'latent dimension: conformational coordinates per particle')
    prior: Prior = _f(Prior.GAUSSIAN, "latent prior: 'gaussian' (standard normal, VAE KL) "
                      "or 'gmm' (cryoTWIN trainable Gaussian mixture with a box rate: over "
                      'many training steps it clumps the latents, which the landscape then '
                      'shows as spurious states; benchmarks/report/realistic_prior.md)',
                      choices=Prior)
    gmm_components: int = _f(100, 'components of the Gaussian-mixture prior')
    gmm_box: float = _f(3.0, 'side T of the box around z over which the mixture mass Q(z) '
                        'of the cryoTWIN rate is integrated', 'latent units')
    decoder: Decoder = _f(Decoder.FREE, "'free': point-network displacement field; 'nma': "
                          'displacements in a normal-mode basis', choices=Decoder)
    dec_width: int = _f(64, 'feature width of the point decoder')
    dec_conv: int = _f(2, 'point-convolution layers of the decoder')
    dec_k: int = _f(16, 'neighbours of each pseudo-atom in the decoder convolutions')
    dec_amplitudes: bool = _f(False, 'also learn per-atom amplitude changes with the '
                              'conformation')
    learn_amplitudes: bool = _f(False, 'also learn a per-pseudo-atom amplitude in [0, 1] '
                                'that depends on the latent (compositional heterogeneity: '
                                'a subunit or domain absent from some particles); starts '
                                'at 0.98 for every atom, held near 1 by w_amplitudes')
    dec_smooth: int = _f(1, 'neighbour-averaging steps of the decoded displacements')
    dec_conditioning: DecoderConditioning = _f(
        DecoderConditioning.SEGMENTS, 'how the latent drives the point decoder',
        choices=DecoderConditioning)
    dec_rank: int = _f(32, "displacement fields of the 'lowrank'/'segments' decoder")
    dec_segments: int = _f(16, "rigid segments blended by the 'segments' decoder")
    nma_modes: int = _f(0, "normal modes of the 'nma' decoder (0: free-form point-network "
                        'field)')
    encoder_inputs: EncoderInputs = _f(
        EncoderInputs.MODES_IMAGE, 'what the encoder sees: linearised normal-mode features '
        'of the particle and/or its low-passed image', choices=EncoderInputs)
    enc_modes: int = _f(16, "normal modes of the encoder's linearised features")
    enc_resolution: float = _f(8.0, 'low-pass / crop resolution of the encoder inputs', 'A')
    enc_width: int = _f(128, 'hidden width of the encoder')
    mode_lambda: float = _f(0.25, 'ridge of the linearised mode-amplitude estimate', '1/A^2')
    loss_resolution: float = _f(None, 'highest resolution used in the image loss (unset: '
                                'where the pseudo-atoms fall to 2% of their amplitude; 0: '
                                'Nyquist)', 'A')
    ctf_pad: float = _f(1.0, 'canvas on which the model applies the CTF, as a multiple of '
                        'the box; above 1 the signal the CTF spreads beyond the box is '
                        'lost, as in particles extracted from micrographs (2 matches such '
                        'images 20-200x more closely at 1.5-2.5 um defocus, but did not '
                        'change the landscape accuracy of the realistic benchmark and '
                        'trains ~30% slower); 1: CTF applied on the box itself, where that '
                        'signal wraps around')
    refine_poses: bool = _f(False, 'learn small per-particle rotation and shift corrections; '
                            'recommended for poses from a consensus refinement with errors of '
                            '1 deg or more (realistic benchmark: Spearman 0.955 against '
                            '0.917 without at 1.35 deg, 0.956 against 0.907 at 2.7 deg; '
                            'with exact or 0.7 deg errors it costs 0.003-0.005)')
    pose_rot_sd: float = _f(2.0, 'prior width of each component of the per-particle rotation '
                            'corrections of refine_poses (0: shifts only)', 'deg')
    pose_shift_sd: float = _f(1.0, 'prior width of each component of the per-particle shift '
                              'corrections of refine_poses', 'A')
    ctf: bool = _f(True, 'particles carry a CTF (False: trained on CTF-free images)')
    n_particles: int = _f(0, 'particles of the training set (set by the training)')
    box: int = _f(None, 'particle box (set from the particles)', 'px')
    apix: float = _f(None, 'pixel size (set from the particles)', 'A/px')
    sigma: float = _f(None, 'pseudo-atom width (set from the reference)', 'A')
    seed: int = _f(0, 'random seed of the initialisation and of every draw')


@dataclass(frozen=True)
class TrainSettings(_Settings):
    """The training run (saved in config.json with the model settings)."""
    epochs: int = _f(30, 'training epochs (passes over the particles)')
    batch_size: int = _f(32, 'global batch size (particles per step, all processes); keep 32 '
                         'on a GPU too: 256 trains 7x faster per epoch on an H200 but loses '
                         '0.025 in landscape accuracy at the same epochs (benchmarks/report/'
                         'gpu.md)')
    lr: float = _f(2e-3, 'initial learning rate (cosine decay)')
    lr_final: float = _f(0.1, 'learning rate at the end, as a fraction of lr')
    noise_final: float = _f(1.0, 'latent training noise at the end, as a fraction of its '
                            'initial width (cosine decay like the learning rate; 1: constant)')
    pose_lr: float = _f(0.2, 'step of the pose corrections per visit of a particle',
                        'deg or A')
    pose_start: float = _f(0.0, 'refine_poses: fraction of the training steps before the '
                           'pose corrections start to move (the motion is learned first, '
                           'so that the corrections do not absorb it; realistic benchmark: '
                           '0.5 costs 0.013 Spearman at 2.7 deg pose errors, gains 0.002 '
                           'with exact poses)')
    beta: float = _f(1.0, 'weight of the latent rate against the data term, both in nats '
                     '(cryoTWIN used 1/8 on EMPIAR-10076; 1 is the evidence lower bound)')
    w_knn: float = _f(1.0, 'weight of the kNN edge-strain regulariser', 'nats per A^2')
    knn_k: int = _f(8, 'neighbours of each pseudo-atom in the kNN strain term')
    w_sinkhorn: float = _f(0.1, 'weight of the Sinkhorn regulariser', 'nats per A^2')
    sinkhorn_every: int = _f(10, 'steps between Sinkhorn evaluations')
    sinkhorn_points: int = _f(1000, 'points subsampled for the Sinkhorn term')
    sinkhorn_samples: int = _f(1, 'latents per global batch used for the Sinkhorn term')
    sinkhorn_blur: float = _f(2.0, 'blur of the Sinkhorn divergence', 'A')
    w_amplitudes: float = _f(0.01, 'learn_amplitudes: weight of the penalty sum_j a0_j '
                             '(1 - a_j) on learned amplitudes a_j below 1 (a0_j: reference '
                             'amplitude, mean 1), per particle like the data term: a whole '
                             'absent domain of n pseudo-atoms costs about w n nats',
                             'nats per pseudo-atom')
    loss: Loss = _f(Loss.NLL, "image loss: 'nll' (Fourier-weighted Gaussian likelihood) or "
                    "'corr'", choices=Loss)
    mask_radius: float = _f(0.9, 'circular mask of the images (0: no mask)',
                            'fraction of the half box')
    calib_particles: int = _f(512, 'particles used to calibrate scale and noise')
    log_every: int = _f(20, 'steps between progress lines')
    time_limit: float = _f(None, 'stop at the end of the epoch that would exceed this '
                           '(unset or 0: no limit)', 'minutes')
    threads: int = _f(None, 'CPU threads (unset: torch default)')
    device: str = _f('cpu', "'cpu' or 'cuda'")
    weight_decay: float = _f(0.0, 'AdamW weight decay')
    cache_features: bool = _f(True, 'keep the encoder inputs in a disk memory map')
    train_box: int = _f(None, 'train at this box: the particles are Fourier-cropped to it '
                        'when read (pixel size scaled by particle box / train box, CTF '
                        'computed at that pixel size, shifts in A unchanged); the model '
                        'is in A, so inference on the full-size particles crops them the '
                        'same way and volumes can be decoded at the full box (unset: the '
                        'particle box)', 'px')
    particle_box: int = _f(None, 'box of the particles before train_box cropping (set by '
                           'the training; the default box of decoded volumes)', 'px')
    data_workers: int = _f(None, 'background processes that read (and crop) the particle '
                           'images of the next batches while the model trains (0: one '
                           'background thread; unset: 0 on the CPU, 4 on a GPU)')


@dataclass(frozen=True)
class ReferenceSettings(_Settings):
    """Pseudo-atom reference cloud from an atomic model or a map."""
    n_atoms: str = _f(None, 'pseudo-atoms of the reference (unset: sized for the box and '
                      'pixel size; 0 or all: every atom of the model)')
    apix: float = _f(None, "particles' pixel size, sets the default size (unset: 2.0 for "
                     "models, the map's pixel size for maps)", 'A/px')
    sigma: float = _f(None, 'pseudo-atom width (unset: automatic)', 'A')
    threshold: float = _f(None, 'map density threshold (unset: automatic)')
    seed: int = _f(0, 'random seed of the fit')


@dataclass(frozen=True)
class InferSettings(_Settings):
    """Latents of a particle set with a trained model."""
    batch_size: int = _f(256, 'particles per chunk of the encoder')
    refine_steps: int = _f(30, 'most per-particle latent refinement steps after the '
                           'encoder (batched Gauss-Newton; a particle stops as soon as it '
                           'has converged, mostly after 1-3 steps; 0: encoder output only, '
                           'fastest)')
    refine_lr: float = _f(0.1, "step size of the latent refinement with method='adam' (the "
                          'default Gauss-Newton refinement does not use it)', 'latent units')
    refine_batch_size: int = _f(128, 'largest batch of the latent refinement')
    ignore_refined_poses: bool = _f(False, 'use the input poses even when the particles are '
                                    'the training set of a model trained with '
                                    'refine_poses (by default its learned pose '
                                    'corrections are used for them)')
    prior_weight: float = _f(1.0, 'weight of the prior in the latent refinement')


@dataclass(frozen=True)
class PoseSettings(_Settings):
    """Global pose search without starting angles (``poses``)."""
    angular_step: float = _f(10.0, 'angular step of the global orientation grid', 'deg')
    final_step: float = _f(1.0, 'stop the local refinement at this angular step', 'deg')
    candidates: int = _f(5, 'distinct candidate poses refined per particle (with several '
                         'references, shared among them: at least 2 each)')
    max_shift: float = _f(None, 'largest shift searched (unset: 5 pixels)', 'A')
    resolution: float = _f(None, 'highest resolution used (unset: where the pseudo-atoms '
                           'fall to 2% of their amplitude)', 'A')
    coarse_resolution: float = _f(None, 'resolution of the global stage (unset: from the '
                                  'grid step, the molecule radius and the CTF)', 'A')
    batch_size: int = _f(64, 'particles per batch')
    local_step: float = _f(5.0, 'first angular step of the local refinement from given '
                           'poses (--local, --model); it halves down to final_step', 'deg')
    rounds: int = _f(1, 'with --model: rounds of pose repair (each after the first infers '
                     'the latents again at the repaired poses)')
    model_rounds: int = _f(1, 'global search: rounds of search against structures learned '
                           'from the particles, after the search against the reference (each '
                           'round trains a model on the current poses, searches again against '
                           '3 structures it decodes along its first latent axis, trains on '
                           'those poses and repairs every pose against the particle\'s own '
                           'structure); 0: the reference only')


@dataclass(frozen=True)
class RuntimeSettings(_Settings):
    """Where a command runs."""
    device: str = _f('cpu', "'cpu' or 'cuda'")
    threads: int = _f(None, 'CPU threads (unset: torch default)')


@dataclass(frozen=True)
class SimulateSettings(_Settings):
    """Synthetic particle set of a moving molecule, with its ground truth."""
    n_particles: int = _f(2000, 'number of particles')
    box: int = _f(64, 'image side (even)', 'px')
    apix: float = _f(2.0, 'pixel size', 'A/px')
    snr: float = _f(0.1, 'signal-to-noise ratio (variance ratio over the box)')
    motion: Motion = _f(Motion.HINGE, 'hinge: a domain rotates; linear: a domain translates; '
                        'nma: elastic-network normal modes', choices=Motion)
    population: Population = _f(Population.THREE_MODE, 'population law of the coordinates: '
                                'three_mode (0.4/0.2/0.4 at 0.1/0.5/0.9), uniform or grid '
                                '(discrete states)', choices=Population)
    seed: int = _f(0, 'random seed (same seed, same data)')
    end_rmsd: float = _f(6.0, 'RMSD between the two ends of the motion', 'A')
    nma_modes: int = _f(2, 'normal modes (coordinates) of the nma motion: 1 or 2')
    sigma: float = _f(None, "pseudo-atom Gaussian width (unset: the molecule's)", 'A')
    max_shift: float = _f(4.0, 'maximum in-plane shift', 'A')
    weights: tuple = _f(None, 'population weights of the states (three_mode: 3 numbers)')
    n_states: int = _f(None, 'discrete states per coordinate of the grid population')
    keep_clean: bool = _f(False, 'also write the noise-free stack particles_clean.mrcs')
    chunk_size: int = _f(None, 'images rendered per chunk (unset: automatic)')


@dataclass(frozen=True)
class LandscapeSettings(_Settings):
    """Embedding, free-energy map and states (``landscape analyze``)."""
    embedding: EmbeddingMethod = _f(EmbeddingMethod.PCA, '2D embedding of the map',
                                   choices=EmbeddingMethod)
    n_states: str = _f(StateCount.AUTO, "number of states, 'auto' (free-energy basins) or "
                       "'bic' (Gaussian components chosen by BIC)", choices=StateCount)
    method: StateMethod = _f(StateMethod.GMM, 'clustering: Gaussian mixture or k-means',
                             choices=StateMethod)
    barrier: float = _f(None, "'auto' states: merge basins separated by less than this "
                        'free-energy barrier (unset: 0.3 kT between basins of the '
                        'free-energy map, which must also be 3 sampling s.d. deep; 1 kT for '
                        'basins in latent space, of k-means or of a prior)', 'kT')
    min_population: float = _f(0.01, "'auto' states: merge basins holding less than this "
                               'fraction of the particles')
    density_smoothing: int = _f(2, "'auto' states: times the density is averaged over each "
                                "particle's graph neighbours before finding basins (0: the "
                                'density at each particle)')
    knn: int = _f(10, "neighbours of each particle in the graph of the 'auto' states")
    max_states: int = _f(10, 'largest number of mixture components tried by BIC')
    max_fit: int = _f(20000, 'fit models on at most this many random particles, then '
                      'assign all')
    bootstrap: int = _f(100, 'bootstrap replicates for the state populations (each re-runs '
                        'the state finder)')
    fe_bootstrap: int = _f(50, 'bootstrap replicates for the free-energy error')
    bins: int = _f(None, 'grid cells per axis of the map (unset: automatic, 64-400)')
    bandwidth: str = _f(Bandwidth.CV, "KDE width of the map (and of its states): 'cv' "
                        "(cross-validated), 'scott', 'silverman' or a number in embedding "
                        'units',
                        choices=Bandwidth)
    kernel: MapKernel = _f(MapKernel.ADAPTIVE, "kernel width over the map (and its states): "
                           "'adaptive' -- the width above times (p/g)^-1/2, p the fixed-width "
                           'density at the particle, g its geometric mean over the particles '
                           "(Abramson's square-root law: narrow where the particles are dense, "
                           'so a sharp minor state between broad ones keeps its barriers; '
                           "wide in sparse regions, so noise there makes no basins); 'fixed' "
                           '-- the same width everywhere', choices=MapKernel)
    latent_bootstrap: int = _f(0, 'bootstrap replicates for the latent-space dG error')
    units: EnergyUnit = _f(EnergyUnit.KT, 'free-energy units', choices=EnergyUnit)
    temperature: float = _f(298.15, 'temperature for kcal/mol or kJ/mol', 'K')
    seed: int = _f(0, 'random seed of embeddings, fits and bootstraps')


@dataclass(frozen=True)
class PathSettings(_Settings):
    """Pathways between states (``landscape path``)."""
    kind: PathKind = _f(PathKind.DENSITY, 'density-following graph path, cryoTWIN '
                        'ridgeline or principal axis', choices=PathKind)
    n_points: int = _f(None, 'points along the path (unset: pca 10, density 20, ridgeline '
                       'K+1)')
    pc: int = _f(1, 'pca path: principal axis (1 = PC1)')
    percentiles: tuple = _f((5.0, 95.0), 'pca path: range along the axis', 'percentiles')
    knn: int = _f(10, 'density path: neighbours per node')
    alpha: float = _f(1.0, 'density path: edge cost length*exp(alpha*dG) (0: geodesic)')
    max_nodes: int = _f(20000, 'density path: particles used as graph nodes')
    K: int = _f(11, 'ridgeline: steps')
    omega: float = _f(2.0, 'ridgeline: exponent omega of the end weight')
    M: int = _f(1000, 'ridgeline: random draws of the other components')


#: points along a path of each kind when ``PathSettings.n_points`` is unset
#: (ridgeline: ``K + 1``); 'line': a straight line between two latent points
PATH_POINTS = {PathKind.PCA.value: 10, PathKind.DENSITY.value: 20, 'line': 10,
               ExplorePathKind.DRAWN.value: 10}


@dataclass(frozen=True)
class ExploreSettings(_Settings):
    """The interactive landscape explorer (``explore``; points along its
    paths: ``PathSettings.n_points``)."""
    path_kind: ExplorePathKind = _f(ExplorePathKind.DRAWN, 'drawn: along the clicked '
                                    'polyline; density: minimum free-energy path through '
                                    'the particles between its first and last points',
                                    choices=ExplorePathKind)
    inverse: ExploreInverse = _f(ExploreInverse.AUTO, 'map point -> latent: auto (PCA '
                                 'inverse on PCA maps, median of the nearest particles '
                                 'otherwise) or neighbours (always the median)',
                                 choices=ExploreInverse)


@dataclass(frozen=True)
class DiagnosticsSettings(_Settings):
    """Isometry and agreement measures of latent spaces."""
    k: int = _f(10, 'nearest neighbours compared between two latent spaces')
    isometry_k: int = _f(5, 'neighbours of each anchor in the isometry correlation')
    n_anchors: int = _f(200, 'anchor particles of the isometry correlation')


@dataclass(frozen=True)
class ValidateSettings(_Settings):
    """Half-set validation (``validate``): two models trained on random halves
    with the training settings, compared (``core.validation``)."""
    split_seed: int = _f(0, 'random seed of the split of the particles into two halves')
    align: AlignMethod = _f(AlignMethod.PROCRUSTES, "map from the second half-set model's "
                            "latent space onto the first's, fitted on the particles of the "
                            "first half and scored on those of the second: 'procrustes' "
                            "(rotation, one scale, shift) or 'linear' (any affine map)",
                            choices=AlignMethod)
    path_points: int = _f(10, 'points along the path at which the two models are compared')
    fe_max_dG: float = _f(3.0, 'free-energy maps are compared where both are below this',
                          'kT')
    mask_width: float = _f(3.0, 'soft edge of the spherical mask applied before the FSC',
                           'px')


def pose_widths_valid(rot_sd, shift_sd):
    """The pose-correction prior widths ``refine_poses`` accepts: rotation
    >= 0 deg (0: shifts only), shift > 0 A."""
    return float(rot_sd) >= 0 and float(shift_sd) > 0


def add_setting(parser, flag, group, name, **kwargs):
    """``parser.add_argument(flag, ...)`` for the setting ``group.name``.

    Default, choices (the Choice values), type (int / float from the field)
    and help (with unit and default) come from the settings; ``kwargs``
    override them (``choices=None`` for an open list such as a number or
    'auto', ``nargs``/``type`` for tuples, ``help`` for a command-specific
    text).  A boolean setting that defaults to False becomes a
    ``store_true`` flag.  The action remembers its setting
    (``action.setting = (group, name)``).
    """
    f = group.field_info(name)
    default = group.default(name)
    if f.type is bool and default is False:
        kwargs.setdefault('action', 'store_true')
    else:
        kwargs.setdefault('default', default)
        if 'choices' not in kwargs and group.choices(name) is not None:
            kwargs['choices'] = group.choices(name).values()
        if 'type' not in kwargs and f.type in (int, float):
            kwargs['type'] = f.type
    kwargs.setdefault('help', group.help(name).replace('%', '%%'))  # argparse %-formats
    action = parser.add_argument(flag, **kwargs)
    action.setting = (group, name)  # read by tests/core/test_settings.py
    return action


def add_settings(parser, group, *names):
    """``add_setting`` for each of ``names``, with the flag ``--name-with-dashes``
    (the settings' defaults, choices, types and help); returns the actions."""
    return [add_setting(parser, '--' + n.replace('_', '-'), group, n) for n in names]


#: every settings group, by name
GROUPS = {c.__name__: c for c in (ModelSettings, TrainSettings, ReferenceSettings,
                                  InferSettings, PoseSettings, RuntimeSettings, SimulateSettings,
                                  LandscapeSettings, PathSettings, ExploreSettings,
                                  DiagnosticsSettings, ValidateSettings)}


# -------------------------------------------------------------- config.json --
#: schema of config.json written now; configs without ``config_schema`` are 1
CONFIG_SCHEMA = 4
#: keys of config.json that describe how the model was made, not settings
PROVENANCE_KEYS = ('config_schema', 'package_version', 'command_line')
#: settings renamed since schema 1: old key -> current key
RENAMED_KEYS = {}
#: settings that did not exist in schema 1, with the value that reproduces
#: what those models did (not necessarily today's default)
ADDED_KEYS = {'ctf': True, 'dec_segments': 16}
#: settings added in schema 3 (models of schema 1-2 applied the CTF on the box)
ADDED_KEYS_SCHEMA_3 = {'ctf_pad': 1.0}
#: settings added in schema 4 (models of schema 1-3 had no learned amplitudes)
ADDED_KEYS_SCHEMA_4 = {'learn_amplitudes': False}
#: also added in schema 4: models of schema 1-3 were trained at the particle box
ADDED_KEYS_SCHEMA_4.update(train_box=None, particle_box=None)


def package_version():
    """Version of continuousflex_geodl (without importing anything heavy)."""
    from .._version import __version__
    return str(__version__)


def with_provenance(config, argv=None):
    """``config`` (dict of settings) plus the schema, the package version and
    the command line (``argv``, default ``sys.argv``) it was made with."""
    out = dict(config)
    out['config_schema'] = CONFIG_SCHEMA
    out['package_version'] = package_version()
    out['command_line'] = [str(a) for a in (sys.argv if argv is None else argv)]
    return out


def migrate_config(config):
    """A model's config.json (dict), from any schema, in the current one.

    Schema 1 (no ``config_schema`` key: models written before settings were
    recorded with their provenance): renamed keys (``RENAMED_KEYS``) take
    their current name, keys added since get the value those models used
    (``ADDED_KEYS``), and the provenance is marked unknown
    (``package_version`` 'unknown', ``command_line`` None).  A config of a
    newer schema than this package knows is refused (ValueError): this
    version cannot rebuild its model faithfully.  The input is not modified.
    """
    if not isinstance(config, dict):
        raise ValueError('A model config must be a JSON object (got %s).'
                         % type(config).__name__)
    cfg = dict(config)
    schema = cfg.get('config_schema', 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ValueError('Invalid config_schema %r in the model config.' % (schema,))
    if schema > CONFIG_SCHEMA:
        raise ValueError('The model was written by a newer continuousflex_geodl (%s, config '
                         'schema %d); this version (%s) reads schema %d at most: update the '
                         'package.' % (cfg.get('package_version', 'unknown'), schema,
                                       package_version(), CONFIG_SCHEMA))
    if schema == 1:
        for old, new in RENAMED_KEYS.items():
            if old in cfg:
                if new in cfg and cfg[new] != cfg[old]:
                    raise ValueError("The model config has both '%s' and its new name '%s' "
                                     'with different values.' % (old, new))
                cfg[new] = cfg.pop(old)
        for key, value in ADDED_KEYS.items():
            cfg.setdefault(key, value)
        cfg.setdefault('package_version', 'unknown')
        cfg.setdefault('command_line', None)
    if schema < 3:
        for key, value in ADDED_KEYS_SCHEMA_3.items():
            cfg.setdefault(key, value)
    if schema < 4:
        for key, value in ADDED_KEYS_SCHEMA_4.items():
            cfg.setdefault(key, value)
    cfg['config_schema'] = CONFIG_SCHEMA
    return cfg


def settings_only(config):
    """``config`` without the provenance keys (what the settings split takes)."""
    return {k: v for k, v in config.items() if k not in PROVENANCE_KEYS}


def default_settings():
    """Every model and training setting with its default (flat dict)."""
    out = ModelSettings.defaults()
    out.update(TrainSettings.defaults())
    return out


def split_settings(settings):
    """(model settings, training settings with defaults filled in) of a flat
    dict (a model folder's config.json without provenance); ValueError naming
    unknown keys.  Here rather than in ``training`` so that reading a trained
    model (``inference``) does not import the training engine."""
    model_defaults, train_cfg = ModelSettings.defaults(), TrainSettings.defaults()
    unknown = set(settings) - set(model_defaults) - set(train_cfg)
    if unknown:
        raise ValueError('Unknown training setting(s): %s' % ', '.join(sorted(unknown)))
    model_cfg = {k: v for k, v in settings.items() if k in model_defaults}
    train_cfg.update({k: v for k, v in settings.items() if k in train_cfg})
    return model_cfg, train_cfg

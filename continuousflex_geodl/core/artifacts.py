"""Output folders on disk: the only code that knows their file names and formats.

``ModelDir`` is the folder written by ``continuousflex-geodl train``:

* ``config.json``   -- model + training settings (JSON);
* ``reference.npz`` -- positions (N, 3) A, amplitudes (N,), sigma A, and the
  normal-mode bases the model uses (``enc_modes``, ``dec_modes``);
* ``weights.pt``    -- final state dict (``torch.load(weights_only=True)``);
* ``history.json``  -- per-epoch records (mean losses, images/s, wall time);
* ``reference_fit.json`` -- with a map or atomic-model reference: how well
  the pseudo-atom cloud represents it (``models.reference.
  reference_fit_quality``: FSC curve and resolutions, real-space
  correlation, pseudo-atoms per residue);
* ``refined_poses.npz`` -- with pose refinement: corrected Euler angles
  (N, 3) deg, ``origin_angst`` (N, 2) A with RELION's sign
  (rlnOriginX/YAngst: particle centre = box centre - origin), ``shifts``
  (N, 2) A in the core convention (t = -origin: molecule centre at box
  centre + t) and the raw corrections ``delta``;
* ``refined_particles.star`` -- with pose refinement: the training particles,
  in their order, with the corrected poses (RELION 3.1, ``core.io.star``);
* ``checkpoints/last.pt`` -- model, optimiser, epoch, history after the last
  complete epoch; ``checkpoints/previous.pt`` the one before (rotation and
  fallback: ``core.checkpoints``);
* ``cache/`` -- per-process memory maps of the encoder inputs
  (``core.training.feature_cache``).

Every write is atomic (``core.fileio``).  This module does not import torch
at import time (Scipion protocols and viewers read model folders), only when
a ``.pt`` file is read or written.

``LandscapeDir``, ``PathDir``, ``SubsetDir``, ``ApplyDir`` and ``DiagnosticsDir``
are the folders of ``continuousflex-geodl landscape analyze / path / subset /
apply / diagnostics`` (their files are listed in ``core/commands/landscape.py``);
``ValidationDir`` is the folder of ``continuousflex-geodl validate``.
``RUN_LOG`` (run.log) is in every output folder of the command line (``core.logs``).
"""
import json
import os

import numpy as np

from . import fileio
from .landscape.density import load_free_energy
from .landscape.embedding import load_embedding
from .logs import RUN_LOG  # the log of the command, in every output folder
from .settings import migrate_config, with_provenance


class ModelDir:
    """A trained model's folder (see the module docstring)."""

    CONFIG = 'config.json'
    REFERENCE = 'reference.npz'
    WEIGHTS = 'weights.pt'
    HISTORY = 'history.json'
    REFERENCE_FIT = 'reference_fit.json'
    REFINED_POSES = 'refined_poses.npz'
    REFINED_STAR = 'refined_particles.star'
    CHECKPOINTS = 'checkpoints'
    LAST = 'last.pt'
    PREVIOUS = 'previous.pt'
    CACHE = 'cache'
    #: keys every training checkpoint holds
    CHECKPOINT_KEYS = ('model', 'optim', 'epoch', 'history')
    #: state-dict keys of the cryoTWIN Gaussian-mixture prior
    PRIOR_KEYS = ('prior.means', 'prior.log_scales', 'prior.logits')

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return 'ModelDir(%r)' % self.path

    def __fspath__(self):
        return self.path

    def _join(self, *names):
        return os.path.join(self.path, *names)

    # ------------------------------------------------------------- file names
    @property
    def config_path(self):
        return self._join(self.CONFIG)

    @property
    def reference_path(self):
        return self._join(self.REFERENCE)

    @property
    def weights_path(self):
        return self._join(self.WEIGHTS)

    @property
    def history_path(self):
        return self._join(self.HISTORY)

    @property
    def reference_fit_path(self):
        return self._join(self.REFERENCE_FIT)

    @property
    def refined_poses_path(self):
        return self._join(self.REFINED_POSES)

    @property
    def checkpoints_dir(self):
        return self._join(self.CHECKPOINTS)

    @property
    def last_checkpoint_path(self):
        return self._join(self.CHECKPOINTS, self.LAST)

    @property
    def previous_checkpoint_path(self):
        return self._join(self.CHECKPOINTS, self.PREVIOUS)

    @property
    def cache_dir(self):
        return self._join(self.CACHE)

    def cache_path(self, name, rank=0):
        """Memory map of the encoder input ``name`` for process ``rank``."""
        return self._join(self.CACHE, 'encoder_%s.rank%d.npy' % (name, int(rank)))

    # ---------------------------------------------------------------- queries
    def has_config(self):
        return os.path.exists(self.config_path)

    def has_reference(self):
        return os.path.exists(self.reference_path)

    def has_weights(self):
        return os.path.exists(self.weights_path)

    def has_checkpoint(self):
        return os.path.exists(self.last_checkpoint_path)

    def has_history(self):
        return os.path.exists(self.history_path)

    def has_refined_poses(self):
        return os.path.exists(self.refined_poses_path)

    def is_trained(self):
        """True when the folder holds final weights or a checkpoint."""
        return self.has_weights() or self.has_checkpoint()

    def make(self):
        """Create the folder and its checkpoints subfolder."""
        os.makedirs(self.checkpoints_dir, exist_ok=True)
        return self

    # ----------------------------------------------------------------- config
    def read_config(self):
        """The settings with their provenance (dict), migrated to the current
        schema (``settings.migrate_config``: older model folders still load).
        FileNotFoundError when absent, ValueError when damaged."""
        if not self.has_config():
            raise FileNotFoundError(
                "No config.json in '%s': is this a model directory written by "
                "'continuousflex-geodl train'?" % self.path)
        with open(self.config_path) as f:
            return migrate_config(json.load(f))

    def write_config(self, config, argv=None):
        """Write the settings with the schema, package version and command
        line (``argv``, default ``sys.argv``)."""
        _write_json(self.config_path, with_provenance(config, argv), indent=1, sort_keys=True)

    # -------------------------------------------------------------- reference
    def read_reference(self):
        """Arrays of reference.npz (dict: positions, amplitudes, [sigma],
        [enc_modes], [dec_modes])."""
        with np.load(self.reference_path) as f:
            return dict(f)

    def write_reference(self, **arrays):
        fileio.atomic_savez(self.reference_path, **arrays)

    def n_atoms(self):
        """Pseudo-atoms of the reference cloud."""
        with np.load(self.reference_path) as f:
            return int(len(f['positions']))

    def has_reference_fit(self):
        return os.path.exists(self.reference_fit_path)

    def read_reference_fit(self):
        """The fit quality (dict) of a map or atomic-model reference; None
        when absent (a saved-cloud reference, a model too large to render)."""
        if not self.has_reference_fit():
            return None
        with open(self.reference_fit_path) as f:
            return json.load(f)

    def write_reference_fit(self, quality):
        """Write the map-fit quality (dict); non-finite numbers as null."""
        quality = {k: None if isinstance(v, float) and not np.isfinite(v) else v
                   for k, v in quality.items()}
        _write_json(self.reference_fit_path, quality, indent=1, default=json_default)

    # ---------------------------------------------------------------- weights
    def write_weights(self, state_dict):
        fileio.atomic_torch_save(state_dict, self.weights_path)

    def read_weights(self):
        """The model's state dict: ``weights.pt``, or the model of the last
        checkpoint when training has not finished."""
        if self.has_weights():
            return fileio.load_torch_state(self.weights_path, 'model weights file')
        if not self.has_checkpoint():
            raise FileNotFoundError("The model directory '%s' has neither weights.pt nor "
                                    "a checkpoint: training has not completed an epoch."
                                    % self.path)
        return self.read_checkpoint(self.last_checkpoint_path, 'training checkpoint')['model']

    def read_prior_state(self):
        """Tensors of the cryoTWIN Gaussian-mixture prior, keyed by
        ``means``, ``log_scales``, ``logits``; None when the model has the
        Gaussian (VAE) prior."""
        if not self.is_trained():
            raise FileNotFoundError("The model directory '%s' has no weights.pt: train the "
                                    "model first." % self.path)
        state = self.read_weights()
        if not all(k in state for k in self.PRIOR_KEYS):
            return None
        return {k.split('.', 1)[1]: state[k] for k in self.PRIOR_KEYS}

    # ------------------------------------------------------------ checkpoints
    def write_checkpoint(self, state, path=None):
        """Write one checkpoint file atomically (rotation: core.checkpoints)."""
        missing = set(self.CHECKPOINT_KEYS) - set(state)
        if missing:
            raise ValueError('A checkpoint needs %s' % ', '.join(sorted(missing)))
        fileio.atomic_torch_save(state, path or self.last_checkpoint_path)

    def read_checkpoint(self, path=None, what='checkpoint'):
        """One checkpoint file (dict); ValueError when damaged or incomplete."""
        path = path or self.last_checkpoint_path
        state = fileio.load_torch_state(path, what)
        missing = set(self.CHECKPOINT_KEYS) - set(state if isinstance(state, dict) else ())
        if missing:
            raise ValueError('The checkpoint %s lacks %s' % (path, ', '.join(sorted(missing))))
        return state

    def checkpoint_epoch(self):
        """Epoch of the last checkpoint (0 when there is none)."""
        if not self.has_checkpoint():
            return 0
        return int(self.read_checkpoint()['epoch'])

    # ---------------------------------------------------------------- history
    def read_history(self):
        """Per-epoch records (list of dicts); FileNotFoundError when absent."""
        if not self.has_history():
            raise FileNotFoundError("No history.json in '%s': training has not completed "
                                    "an epoch yet (history.json is written after each epoch)."
                                    % self.path)
        with open(self.history_path) as f:
            return json.load(f)

    def write_history(self, history):
        _write_json(self.history_path, history, indent=1)

    # ---------------------------------------------------------- refined poses
    def read_refined_poses(self):
        """dict: euler (N, 3) deg, shifts (N, 2) A, delta (raw corrections)."""
        with np.load(self.refined_poses_path) as f:
            return dict(f)

    def write_refined_poses(self, euler, shifts, delta, inputs=None):
        """``shifts``: core t (A); stored with ``origin_angst = -t`` (RELION sign).
        ``inputs``: the training ``ParticleSet``; its input poses and CTF are
        stored too, so that ``refined_poses_for`` knows the set again."""
        shifts = np.asarray(shifts, dtype=np.float64)
        extra = {}
        if inputs is not None:
            extra = dict(input_box_apix=np.array([inputs.box, inputs.apix], np.float64))
            for name in ('euler', 'shifts', 'ctf'):
                if getattr(inputs, name) is not None:
                    extra['input_' + name] = np.asarray(getattr(inputs, name), np.float64)
        fileio.atomic_savez(self.refined_poses_path, euler=euler, shifts=shifts,
                            origin_angst=-shifts, delta=delta, **extra)

    def refined_poses_for(self, pset, atol=1e-3):
        """(euler (N, 3) deg, shifts (N, 2) core t A) learned in training for
        ``pset`` when it is the training set (same size, box and pixel size,
        input poses and CTF within ``atol`` deg / A / relative), else None."""
        if not self.has_refined_poses():
            return None
        rp = self.read_refined_poses()
        if 'input_box_apix' not in rp or len(rp['euler']) != len(pset) or \
                int(rp['input_box_apix'][0]) != pset.box or \
                abs(float(rp['input_box_apix'][1]) - pset.apix) > 1e-4 * pset.apix:
            return None
        for name in ('euler', 'shifts', 'ctf'):
            mine, theirs = getattr(pset, name), rp.get('input_' + name)
            if (mine is None) != (theirs is None):
                return None
            if mine is None:
                continue
            d = np.abs(np.asarray(mine, np.float64) - theirs)
            if name == 'euler':
                d = np.minimum(d, 360.0 - d)
            tol = atol * (1.0 + np.abs(theirs)) if name == 'ctf' else atol
            if not np.all(d <= tol):
                return None
        return np.asarray(rp['euler'], np.float64), np.asarray(rp['shifts'], np.float64)

    @property
    def refined_star_path(self):
        return os.path.join(self.path, self.REFINED_STAR)

    def write_refined_star(self, pset, euler, shifts):
        """The particles of ``pset`` with poses (euler deg, core t A) as a RELION
        3.1 star (origins with RELION's sign, written by ``core.io.star``)."""
        from .io.star import write_star
        out = pset.subset(np.arange(len(pset)))
        out.euler = np.asarray(euler, dtype=np.float64)
        out.shifts = np.asarray(shifts, dtype=np.float64)
        return write_star(self.refined_star_path, out)


def _write_json(path, obj, **kwargs):
    fileio.atomic_write_text(path, json.dumps(obj, **kwargs))


# =============================================================================
# Landscape folders (``continuousflex-geodl landscape ...``)
# =============================================================================



def json_default(o):
    """``json.dump(default=...)`` for numpy values (non-finite floats -> null)."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError('%s is not JSON serialisable' % type(o).__name__)


def _file(name):
    """Property: the path of the file whose name is the class attribute ``name``."""
    return property(lambda self: self._join(getattr(self, name)),
                    doc='path of the %s file' % name)


class OutputDir:
    """Base of the landscape folders: names joined to the folder, atomic
    JSON / .npy writes, and the folder's ``run.log``."""

    RUN_LOG = RUN_LOG

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return '%s(%r)' % (type(self).__name__, self.path)

    def __fspath__(self):
        return self.path

    def _join(self, *names):
        return os.path.join(self.path, *names)

    def make(self):
        os.makedirs(self.path, exist_ok=True)
        return self

    run_log_path = _file('RUN_LOG')

    def _write_json(self, name, obj):
        fileio.atomic_write_text(self._join(name),
                                 json.dumps(obj, indent=1, default=json_default))
        return self._join(name)

    def _read_json(self, name):
        with open(self._join(name)) as f:
            return json.load(f)

    def _write_npy(self, name, array, dtype=None):
        a = np.asarray(array)
        with fileio.atomic_write(self._join(name), 'wb') as fh:
            np.save(fh, a if dtype is None else a.astype(dtype))
        return self._join(name)

    def _read_npy(self, name, mmap=False):
        return np.load(self._join(name), mmap_mode='r' if mmap else None)


def series_paths(folder, prefix, n):
    """(PDB, [MRC ...]) file names of a series of ``n`` structures decoded at
    latent points (``core.landscape.series.decode_series``): ``PREFIX.pdb``
    (model i = point i) and ``PREFIX_000.mrc`` ..."""
    folder = os.fspath(folder)
    return (os.path.join(folder, prefix + '.pdb'),
            [os.path.join(folder, '%s_%03d.mrc' % (prefix, i)) for i in range(int(n))])


def _series_files(folder, prefix, ext):
    if not os.path.isdir(folder):
        return []
    if ext == 'pdb':
        fn = os.path.join(folder, prefix + '.pdb')
        return [fn] if os.path.exists(fn) else []
    return [os.path.join(folder, f) for f in sorted(os.listdir(folder))
            if f.startswith(prefix + '_') and f.endswith('.' + ext)]


class _ParticleMapDir(OutputDir):
    """A folder with every particle placed on a landscape map: its 2D
    embedding and its state (``landscape analyze`` and ``landscape apply``)."""

    EMBEDDING = 'embedding.npy'
    LABELS = 'labels.npy'

    def embedding(self, mmap=False):
        """(N, 2) float32 embedding of every particle ((N, 1) for 1D latents)."""
        return self._read_npy(self.EMBEDDING, mmap)

    def labels(self):
        """(N,) int state of every particle (0-based)."""
        return self._read_npy(self.LABELS).astype(int)


class LandscapeDir(_ParticleMapDir):
    """The folder written by ``landscape analyze`` (contents: the docstring of
    ``core/commands/landscape.py``).  States are numbered from 0.

    Writers are used by ``core.landscape.pipeline`` (and ``States.save``);
    readers by the pipeline (path, subset, apply), the Scipion protocols and
    viewers.  Reading a folder that has no free-energy map raises a
    FileNotFoundError that says so (``require``).
    """

    EMBEDDING_MODEL = 'embedding_model.npz'
    UMAP_MODEL = 'embedding_umap.joblib'
    PCA = 'pca.npy'
    PCA_MODEL = 'pca_model.npz'
    FREE_ENERGY = 'free_energy.npz'
    LATENT_DG = 'latent_dG.npz'
    STATES = 'states.json'
    STATES_MODEL = 'states_model.npz'
    STATE_CENTRES = 'state_centres.npy'
    STATE_CENTRES_EMBEDDING = 'state_centres_embedding.npy'
    FIGURE = 'landscape.png'
    SUMMARY = 'summary.json'
    #: subfolder (and file prefix) of the structures decoded at the state centres
    STRUCTURES = 'states'
    #: per-particle arrays stored in free_energy.npz next to the map
    FE_PARTICLE_DG, FE_PARTICLE_DG_KT, FE_METHOD = 'particle_dG', 'particle_dG_kT', \
        'embedding_method'

    # ------------------------------------------------------------- file names
    embedding_path = _file('EMBEDDING')
    embedding_model_path = _file('EMBEDDING_MODEL')
    umap_model_path = _file('UMAP_MODEL')
    pca_path = _file('PCA')
    pca_model_path = _file('PCA_MODEL')
    free_energy_path = _file('FREE_ENERGY')
    latent_dG_path = _file('LATENT_DG')
    labels_path = _file('LABELS')
    states_path = _file('STATES')
    states_model_path = _file('STATES_MODEL')
    state_centres_path = _file('STATE_CENTRES')
    state_centres_embedding_path = _file('STATE_CENTRES_EMBEDDING')
    figure_path = _file('FIGURE')
    summary_path = _file('SUMMARY')
    structures_dir = _file('STRUCTURES')

    # ---------------------------------------------------------------- queries
    def exists(self):
        """True when the analysis has written its free-energy map."""
        return os.path.exists(self.free_energy_path)

    def require(self):
        """``self``; FileNotFoundError when the folder holds no landscape."""
        if not self.exists():
            raise FileNotFoundError("No landscape in '%s' (%s missing): has the landscape "
                                    "run finished?" % (self.path, self.FREE_ENERGY))
        return self

    def has_states_model(self):
        return os.path.exists(self.states_model_path)

    # ---------------------------------------------------------------- writers
    def write_embedding(self, y):
        return self._write_npy(self.EMBEDDING, y, np.float32)

    def write_pca(self, coords):
        return self._write_npy(self.PCA, coords, np.float32)

    def write_free_energy(self, fe, units, temperature, particle_dG, particle_dG_kT, method):
        """The map (``FreeEnergyMap.save``) with the per-particle dG (in
        ``units`` and in kT) and the embedding method."""
        return fe.save(self.free_energy_path, units, temperature,
                       **{self.FE_PARTICLE_DG: np.asarray(particle_dG, np.float32),
                          self.FE_PARTICLE_DG_KT: np.asarray(particle_dG_kT, np.float32),
                          self.FE_METHOD: np.array(str(method))})

    def write_latent_dG(self, dG, dG_std, units, temperature, kT):
        fileio.atomic_savez(self.latent_dG_path, dG=np.asarray(dG, np.float32),
                            dG_std=np.asarray(dG_std, np.float32), units=np.array(str(units)),
                            temperature_K=np.array(float(temperature)), kT=np.array(kT))
        return self.latent_dG_path

    def write_state_centres(self, centres, centres_embedding):
        self._write_npy(self.STATE_CENTRES, centres, np.float32)
        self._write_npy(self.STATE_CENTRES_EMBEDDING, centres_embedding, np.float32)

    def write_states(self, summary, model_arrays, labels):
        """What ``States.save`` writes: the summary (states.json), the arrays
        that assign later particles (states_model.npz) and the labels."""
        self.make()
        self._write_json(self.STATES, summary)
        fileio.atomic_savez(self.states_model_path, **model_arrays)
        self._write_npy(self.LABELS, labels, np.int32)

    def write_summary(self, summary):
        return self._write_json(self.SUMMARY, summary)

    def structure_paths(self, n):
        """(PDB, [MRC ...]) of the structures at the ``n`` state centres."""
        return series_paths(self.structures_dir, self.STRUCTURES, n)

    # ---------------------------------------------------------------- readers
    def pca(self):
        return self._read_npy(self.PCA)

    def states(self):
        """The states.json summary (dict)."""
        return self._read_json(self.STATES)

    def read_states_model(self):
        """(states.json dict, states_model.npz arrays dict, labels or None)."""
        if not self.has_states_model():
            raise FileNotFoundError("No %s in '%s': run 'continuousflex-geodl landscape "
                                    "analyze' first." % (self.STATES_MODEL, self.path))
        with np.load(self.states_model_path) as f:
            arrays = {k: f[k] for k in f.files}
        labels = self._read_npy(self.LABELS) if os.path.exists(self.labels_path) else None
        return self.states(), arrays, labels

    def summary(self):
        return self._read_json(self.SUMMARY)

    def state_centres(self):
        """(S, K) latent point of each state."""
        return self._read_npy(self.STATE_CENTRES)

    def state_points(self):
        """(S, 2) state centres on the map, or None when not written."""
        fn = self.state_centres_embedding_path
        return np.load(fn) if os.path.exists(fn) else None

    def _fe_arrays(self, *keys):
        self.require()
        with np.load(self.free_energy_path) as f:
            return {k: f[k] for k in keys if k in f.files}

    def method(self):
        """The embedding method of the map ('pca', 'umap', 'tsne')."""
        a = self._fe_arrays(self.FE_METHOD)
        return str(a[self.FE_METHOD]) if self.FE_METHOD in a else 'pca'

    def particle_dG(self):
        """((N,) float dG of every particle in the landscape's units, units)."""
        a = self._fe_arrays(self.FE_PARTICLE_DG, 'units')
        return np.asarray(a[self.FE_PARTICLE_DG], float), str(a['units'])

    def free_energy(self):
        """The map as a ``core.landscape.density.FreeEnergyMap`` (values in kT)."""
        self.require()
        return load_free_energy(self.free_energy_path)

    def embedding_model(self):
        """The fitted 2D mapping (``core.landscape.embedding``), for new latents."""
        return load_embedding(self.embedding_model_path)

    def pca_model(self):
        return load_embedding(self.pca_model_path)

    def latent_dG(self):
        with np.load(self.latent_dG_path) as f:
            return {k: f[k] for k in f.files}

    def state_files(self, ext):
        """Files of the structures at the state centres: ``ext`` 'pdb' (the
        multi-model PDB, or []) or 'mrc' (one map per state, in state order)."""
        return _series_files(self.structures_dir, self.STRUCTURES, ext)

    def states_pdb(self):
        """The multi-model PDB of the states, or None when none was decoded."""
        files = self.state_files('pdb')
        return files[0] if files else None


class PathDir(OutputDir):
    """The folder written by ``landscape path``: the ordered latent points,
    the same on the landscape map, the summary (path.json), a figure, and
    with a model the structures ``path.pdb`` / ``path_000.mrc`` ..."""

    LATENTS = 'path_latents.npy'
    EMBEDDING = 'path_embedding.npy'
    INFO = 'path.json'
    FIGURE = 'path.png'
    STRUCTURES = 'path'

    latents_path = _file('LATENTS')
    embedding_path = _file('EMBEDDING')
    info_path = _file('INFO')
    figure_path = _file('FIGURE')

    def exists(self):
        return os.path.exists(self.latents_path)

    def write_latents(self, z):
        return self._write_npy(self.LATENTS, z, np.float32)

    def write_embedding(self, y):
        return self._write_npy(self.EMBEDDING, y, np.float32)

    def write_info(self, info):
        return self._write_json(self.INFO, info)

    def latents(self):
        """(M, K) float32 ordered latent points."""
        if not self.exists():
            raise FileNotFoundError("No pathway in '%s' (%s missing): has the path run "
                                    "finished?" % (self.path, self.LATENTS))
        return self._read_npy(self.LATENTS)

    def embedding(self):
        return self._read_npy(self.EMBEDDING)

    def info(self):
        return self._read_json(self.INFO)

    def structure_paths(self, n):
        return series_paths(self.path, self.STRUCTURES, n)

    def structure_files(self, ext):
        return _series_files(self.path, self.STRUCTURES, ext)


class SubsetDir(OutputDir):
    """The folder written by ``landscape subset``: the selected particle
    indices (text, with a comment header, and .npy, 0-based), subset.json and
    with ``--particles`` the selected particles as RELION .star."""

    INDICES_TXT = 'subset_indices.txt'
    INDICES = 'subset_indices.npy'
    INFO = 'subset.json'
    PARTICLES = 'particles.star'

    indices_txt_path = _file('INDICES_TXT')
    particles_path = _file('PARTICLES')

    def write_indices(self, indices):
        return self._write_npy(self.INDICES, indices, np.int64)

    def write_info(self, info):
        return self._write_json(self.INFO, info)

    def indices(self):
        return self._read_npy(self.INDICES)

    def info(self):
        return self._read_json(self.INFO)


class ApplyDir(_ParticleMapDir):
    """The folder written by ``landscape apply``: new particles placed on a
    landscape (embedding, state labels, dG in the landscape's units)."""

    PARTICLE_DG = 'particle_dG.npy'
    INFO = 'apply.json'

    def write(self, embedding, labels, particle_dG, info):
        self._write_npy(self.EMBEDDING, embedding, np.float32)
        self._write_npy(self.LABELS, labels, np.int32)
        self._write_npy(self.PARTICLE_DG, particle_dG, np.float32)
        return self._write_json(self.INFO, info)

    def particle_dG(self):
        return self._read_npy(self.PARTICLE_DG)

    def info(self):
        return self._read_json(self.INFO)


class DiagnosticsDir(OutputDir):
    """The folder written by ``landscape diagnostics`` (diagnostics.json)."""

    INFO = 'diagnostics.json'

    def write_info(self, info):
        return self._write_json(self.INFO, info)

    def info(self):
        return self._read_json(self.INFO)


class DecodeDir(OutputDir):
    """The folder written by ``continuousflex-geodl decode``: the decoded latent
    points (latents.npy), the multi-model PDB of the deformed pseudo-atoms
    (structures.pdb, model i = point i; B-factor = amplitude, occupancy =
    learned amplitude in [0, 1]), one map per point (vol_000.mrc ...) and,
    for a model with ``learn_amplitudes``, the learned amplitudes (M, N)
    (amplitudes.npy)."""

    LATENTS = 'latents.npy'
    PDB = 'structures.pdb'
    VOLUME = 'vol_%03d.mrc'
    AMPLITUDES = 'amplitudes.npy'

    amplitudes_path = _file('AMPLITUDES')

    latents_path = _file('LATENTS')
    pdb_path = _file('PDB')

    def volume_path(self, i):
        return self._join(self.VOLUME % int(i))

    def write_latents(self, z):
        return self._write_npy(self.LATENTS, z, np.float32)

    def latents(self):
        return self._read_npy(self.LATENTS)

    def write_amplitudes(self, amp):
        return self._write_npy(self.AMPLITUDES, amp, np.float32)

    def amplitudes(self):
        return self._read_npy(self.AMPLITUDES)

    def volume_files(self):
        """The maps written, in point order ([] when none)."""
        if not os.path.isdir(self.path):
            return []
        prefix, ext = self.VOLUME.split('%')[0], os.path.splitext(self.VOLUME)[1]
        return [self._join(f) for f in sorted(os.listdir(self.path))
                if f.startswith(prefix) and f.endswith(ext)]


class ValidationDir(OutputDir):
    """The folder written by ``continuousflex-geodl validate`` (half-set
    validation, ``core.validation``):

    * ``split.npz`` -- ``half1``, ``half2`` (sorted 0-based particle rows),
      ``seed``, ``n_particles``; ``half1.star`` / ``half2.star`` the halves'
      particles (RELION 3.1, images where they are);
    * ``model_half1/``, ``model_half2/`` -- the two models (``ModelDir``);
    * ``latents_half1.npy``, ``latents_half2.npy`` -- (N, K) float32 latents of
      ALL particles from each model; ``latents_half2_aligned.npy`` the second
      mapped into the first space; ``alignment.npz`` (method, matrix, offset,
      scale: ``y = x @ matrix + offset``; fitted on half 1's particles);
    * ``agreement.npz`` -- ``relative_error`` (N,) per particle, ``held_out``
      (N,) bool (the particles of half 2, on which the agreement is scored);
    * ``landscape_half1/``, ``landscape_half2/`` -- ``landscape analyze`` of each
      model's latents (the second aligned: same space) (``LandscapeDir``);
      ``path/`` -- a path on half 1's landscape (``PathDir``);
    * ``maps/half1_state_000.mrc``, ``maps/half2_state_000.mrc``, ...,
      ``maps/half1_path_000.mrc`` ... -- the maps decoded at matched latents;
    * ``fsc.npz`` -- ``freqs`` (F,) 1/A, ``state_curves`` (S, F),
      ``path_curves`` (P, F), ``state_latents`` / ``path_latents`` (first
      space), ``state_res_0143`` / ``state_res_05`` / ``path_res_0143`` /
      ``path_res_05`` (A); ``contrast_curve`` (F,), ``contrast_res_0143`` /
      ``contrast_res_05``: the FSC between the path's two ends decoded by the
      model of half 1 (how much the conformations differ);
    * ``fe_maps.npz`` -- both free-energy maps on one grid (x, y, dG1, dG2 in
      kT) and the state centres of each on that map (``state_points1/2``);
    * ``validation.json`` (the report), ``validation.md`` (the same, readable),
      ``latent_agreement.png``, ``fsc.png``, ``landscape_comparison.png``;
    * ``run.log``.
    """

    SPLIT = 'split.npz'
    HALF_STAR = 'half%d.star'
    MODEL = 'model_half%d'
    LATENTS = 'latents_half%d.npy'
    ALIGNED = 'latents_half2_aligned.npy'
    ALIGNMENT = 'alignment.npz'
    AGREEMENT = 'agreement.npz'
    LANDSCAPE = 'landscape_half%d'
    PATH = 'path'
    MAPS = 'maps'
    MAP = 'half%d_%s_%03d.mrc'
    FSC = 'fsc.npz'
    FE_MAPS = 'fe_maps.npz'
    REPORT = 'validation.json'
    REPORT_MD = 'validation.md'
    FIG_AGREEMENT = 'latent_agreement.png'
    FIG_FSC = 'fsc.png'
    FIG_LANDSCAPE = 'landscape_comparison.png'
    #: every file of a complete folder (besides the sub-folders' own)
    FILES = (SPLIT, ALIGNED, ALIGNMENT, AGREEMENT, FSC, FE_MAPS, REPORT, REPORT_MD,
             FIG_AGREEMENT, FIG_FSC, FIG_LANDSCAPE, RUN_LOG)

    split_path = _file('SPLIT')
    aligned_path = _file('ALIGNED')
    alignment_path = _file('ALIGNMENT')
    agreement_path = _file('AGREEMENT')
    fsc_path = _file('FSC')
    fe_maps_path = _file('FE_MAPS')
    report_path = _file('REPORT')
    report_md_path = _file('REPORT_MD')
    agreement_figure_path = _file('FIG_AGREEMENT')
    fsc_figure_path = _file('FIG_FSC')
    landscape_figure_path = _file('FIG_LANDSCAPE')
    path_dir = _file('PATH')
    maps_dir = _file('MAPS')

    def exists(self):
        return os.path.exists(self.report_path)

    def missing(self):
        """Files of a complete folder that are absent (list of names)."""
        names = list(self.FILES) + [self.HALF_STAR % h for h in (1, 2)] + \
            [self.LATENTS % h for h in (1, 2)]
        return [n for n in names if not os.path.exists(self._join(n))]

    def half_star_path(self, half):
        return self._join(self.HALF_STAR % int(half))

    def model_path(self, half):
        return self._join(self.MODEL % int(half))

    def latents_path(self, half):
        return self._join(self.LATENTS % int(half))

    def landscape_path(self, half):
        return self._join(self.LANDSCAPE % int(half))

    def map_path(self, half, kind, i):
        """``maps/half{half}_{kind}_{i:03d}.mrc`` (kind 'state' or 'path')."""
        return self._join(self.MAPS, self.MAP % (int(half), kind, int(i)))

    # ------------------------------------------------------------- writing
    def write_split(self, half1, half2, seed, n_particles):
        with fileio.atomic_write(self.split_path, 'wb') as fh:
            np.savez(fh, half1=np.asarray(half1, np.int64), half2=np.asarray(half2, np.int64),
                     seed=np.array(int(seed)), n_particles=np.array(int(n_particles)))
        return self.split_path

    def write_latents(self, half, z):
        return self._write_npy(self.LATENTS % int(half), z, np.float32)

    def write_aligned(self, z):
        return self._write_npy(self.ALIGNED, z, np.float32)

    def write_alignment(self, alignment, fit_rows):
        with fileio.atomic_write(self.alignment_path, 'wb') as fh:
            np.savez(fh, method=np.array(alignment.method), matrix=alignment.matrix,
                     offset=alignment.offset,
                     scale=np.array(np.nan if alignment.scale is None else alignment.scale),
                     fit_rows=np.asarray(fit_rows, np.int64))
        return self.alignment_path

    def write_agreement(self, relative_error, held_out):
        with fileio.atomic_write(self.agreement_path, 'wb') as fh:
            np.savez(fh, relative_error=np.asarray(relative_error, np.float32),
                     held_out=np.asarray(held_out, bool))
        return self.agreement_path

    def write_fsc(self, **arrays):
        with fileio.atomic_write(self.fsc_path, 'wb') as fh:
            np.savez(fh, **arrays)
        return self.fsc_path

    def write_fe_maps(self, fe1, fe2, state_points1, state_points2):
        data = dict(x=fe1.centres[0], dG1=fe1.dG, dG2=fe2.dG,
                    state_points1=np.asarray(state_points1, np.float64),
                    state_points2=np.asarray(state_points2, np.float64))
        if fe1.ndim == 2:
            data['y'] = fe1.centres[1]
        with fileio.atomic_write(self.fe_maps_path, 'wb') as fh:
            np.savez(fh, **data)
        return self.fe_maps_path

    def write_report(self, report, markdown):
        self._write_json(self.REPORT, report)
        fileio.atomic_write_text(self.report_md_path, markdown)
        return self.report_path

    # ------------------------------------------------------------- reading
    def split(self):
        with np.load(self.split_path) as f:
            return f['half1'], f['half2']

    def latents(self, half, mmap=True):
        return self._read_npy(self.LATENTS % int(half), mmap)

    def aligned(self, mmap=True):
        return self._read_npy(self.ALIGNED, mmap)

    def agreement(self):
        with np.load(self.agreement_path) as f:
            return dict(f)

    def fsc(self):
        with np.load(self.fsc_path) as f:
            return dict(f)

    def fe_maps(self):
        with np.load(self.fe_maps_path) as f:
            return dict(f)

    def report(self):
        return self._read_json(self.REPORT)

    def map_files(self, half, kind):
        """The maps of ``half`` and ``kind`` ('state' / 'path'), in order."""
        if not os.path.isdir(self.maps_dir):
            return []
        prefix = 'half%d_%s_' % (int(half), kind)
        return [self._join(self.MAPS, f) for f in sorted(os.listdir(self.maps_dir))
                if f.startswith(prefix) and f.endswith('.mrc')]

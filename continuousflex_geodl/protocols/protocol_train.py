"""Protocol: train the point-cloud deformation model on particles."""
import functools
import json
import os
import socket
import subprocess

import pyworkflow.protocol.params as params
from pyworkflow.constants import BETA
from pwem.objects import SetOfParticles

from .. import constants as const
from ..convert import normalModesToNpz
from ..core.artifacts import ModelDir
from ..core.settings import (EncoderInputs, ModelSettings as MS, Prior, ReferenceSettings,
                             TrainSettings as TS, pose_widths_valid)
from ..objects import GeoDLModel
from .protocol_base import GeoDLProtBase, coreCommandFlags


class GeoDLProtTrain(GeoDLProtBase):
    """Learn a conformational landscape: train encoder, point-cloud decoder and prior.

    The reference structure (an atomic model, or a consensus map fitted with
    pseudo-atoms) is represented as Gaussian pseudo-atoms.  A point neural
    network deforms it as a function of a latent coordinate z; an encoder maps
    each particle image to z; rendered, CTF-modulated projections are compared
    with the particles, with optimal-transport and neighbourhood regularisers
    keeping the deformed cloud physical.  The decoder can instead be restricted
    to elastic-network normal modes (HEMNMA-like).

    Needs particles with CTF and 3D angles (from a consensus refinement).
    With several GPU ids, training runs data-parallel (torchrun, one process
    per listed GPU, nccl); on the CPU, one process with the given threads.
    Sent to a queue (hosts.conf, e.g. SLURM with ``--gres=gpu:%(GPU_COUNT)d``),
    a job of several machines trains on the listed GPUs of each of them
    (torchrun's c10d rendezvous; see README "GPUs and clusters").
    Training curves are in the model folder (history.json); use the
    *Continue* action to resume an interrupted (or extended: raise the
    epochs) training from the last checkpoint.
    """
    _label = 'train'
    _devStatus = BETA
    _possibleOutputs = {'outputModel': GeoDLModel, 'outputParticles': SetOfParticles}

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        self._addInputSection(form)
        form.addParam('inputParticles', params.PointerParam, pointerClass='SetOfParticles',
                      important=True, label='Input particles',
                      help='Particles with CTF and 3D projection alignment (angles and '
                           'shifts from a consensus refinement).')
        form.addParam('inputReference', params.PointerParam,
                      pointerClass='AtomStruct,Volume', important=True,
                      label='Reference structure or map',
                      help='An atomic model (PDB/mmCIF, in the frame of the particles) or '
                           'a consensus map (same box and pixel size as the particles); '
                           'it is converted to Gaussian pseudo-atoms.')
        form.addParam('inputModes', params.PointerParam, pointerClass='SetOfNormalModes',
                      allowsNull=True, expertLevel=params.LEVEL_ADVANCED,
                      label='ContinuousFlex normal modes (optional)',
                      help='Normal modes of the reference computed with ContinuousFlex '
                           '(NMA protocol), on the same atomic model as the reference '
                           '(same frame). When given, the decoder deforms the reference '
                           'only in the span of these modes (as HEMNMA / DeepHEMNMA); '
                           'the modes are interpolated onto the pseudo-atoms. Rigid-body '
                           'modes 1-6 and disabled modes are skipped.')

        form.addSection(label='Model')
        form.addParam('zdim', params.IntParam, default=MS.zdim, validators=[params.Positive],
                      label='Latent dimension',
                      help='Number of conformational coordinates per particle '
                           '(cryoTWIN used 8 on real data).')
        form.addParam('prior', params.EnumParam, choices=Prior.labels(),
                      default=Prior.index(MS.prior), label='Latent prior',
                      help='gaussian (default): a standard normal prior with a KL rate '
                           '(cryoDRGN-style VAE). gmm: a trainable Gaussian-mixture prior '
                           '(cryoTWIN), which also gives pathways between its components, '
                           'but over many training steps (large sets, more epochs) it '
                           'gathers the latents into clumps that the landscape shows as '
                           'spurious states (measured: 9 states instead of 3 with 5,000 '
                           'and 10,000 particles; gaussian found the 3).')
        form.addParam('nmaModes', params.IntParam, default=MS.nma_modes,
                      label='Normal modes of the decoder',
                      help='0: free-form deformation field from the point network. '
                           'N > 0: displacements restricted to the N lowest elastic-network '
                           'normal modes of the reference (computed automatically).')
        form.addParam('nAtoms', params.IntParam, default=ReferenceSettings.n_atoms or 0,
                      label='Number of pseudo-atoms',
                      help='Pseudo-atoms representing the reference. 0: sized '
                           'automatically for the box and pixel size.')
        form.addParam('allAtoms', params.BooleanParam, default=False,
                      expertLevel=params.LEVEL_ADVANCED, label='Use every atom?',
                      help='Use every atom of the atomic model as a pseudo-atom (slow for '
                           'large models; overrides the number of pseudo-atoms).')
        form.addParam('refinePoses', params.BooleanParam, default=MS.refine_poses,
                      label='Refine poses?',
                      help='Also learn small per-particle rotation and shift corrections '
                           '(the consensus poses are biased for heterogeneous samples). '
                           'Recommended when the poses come from a consensus refinement: '
                           'with errors of ~3 deg it recovered the landscape much better '
                           'on the realistic benchmark; with exact (simulated) poses it '
                           'costs a little.')
        form.addParam('poseRotSd', params.FloatParam, default=MS.pose_rot_sd,
                      condition='refinePoses', expertLevel=params.LEVEL_ADVANCED,
                      label='Rotation correction prior (deg)',
                      help=MS.sentence('pose_rot_sd'))
        form.addParam('poseShiftSd', params.FloatParam, default=MS.pose_shift_sd,
                      condition='refinePoses', expertLevel=params.LEVEL_ADVANCED,
                      label='Shift correction prior (A)',
                      help=MS.sentence('pose_shift_sd'))
        form.addParam('learnAmplitudes', params.BooleanParam, default=MS.learn_amplitudes,
                      label='Learn amplitudes (compositional change)?',
                      help=MS.sentence('learn_amplitudes') + ' Use it when a subunit, '
                           'domain or ligand may be absent from some particles: decoded '
                           'structures then carry a per-atom amplitude (PDB occupancy).')
        form.addParam('encoderInputs', params.EnumParam, choices=EncoderInputs.values(),
                      default=EncoderInputs.index(MS.encoder_inputs),
                      expertLevel=params.LEVEL_ADVANCED, label='Encoder inputs',
                      help='What the encoder sees: linearised normal-mode features of the '
                           'particle and/or the low-passed particle image itself.')

        form.addSection(label='Training')
        form.addParam('epochs', params.IntParam, default=TS.epochs, validators=[params.Positive],
                      label='Epochs',
                      help='Passes over the particle set. To train more, raise it and '
                           'use Continue: training resumes from the last checkpoint.')
        form.addParam('batchSize', params.IntParam, default=TS.batch_size,
                      validators=[params.Positive], label='Batch size',
                      help='Particles per optimisation step. Larger batches are faster '
                           'per particle on a GPU and need more memory.')
        form.addParam('learningRate', params.FloatParam, default=TS.lr,
                      validators=[params.Positive], label='Learning rate',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Initial step size of the optimiser (cosine decay).')
        form.addParam('beta', params.FloatParam, default=TS.beta,
                      expertLevel=params.LEVEL_ADVANCED, label='Rate weight (beta)',
                      help=TS.sentence('beta'))
        form.addParam('timeLimit', params.FloatParam, default=TS.time_limit or 0.0,
                      expertLevel=params.LEVEL_ADVANCED, label='Time limit (minutes)',
                      help='Stop at the end of the epoch that would exceed this time '
                           '(0: no limit). Continue later to train further.')
        form.addParam('trainBox', params.IntParam, default=TS.train_box or 0,
                      expertLevel=params.LEVEL_ADVANCED, label='Training box (px)',
                      help=TS.sentence('train_box') + ' 0: the particle box.')
        form.addParam('seed', params.IntParam, default=MS.seed, label='Random seed',
                      expertLevel=params.LEVEL_ADVANCED,
                      help='Seed of the network initialisation and of the batch order; '
                           'the same seed and inputs give the same model on the CPU, and '
                           'a resumed run reproduces the uninterrupted one.')
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep,
                                 self.inputParticles.get().getObjId())
        # training params are step arguments: changing them (e.g. more epochs)
        # and pressing Continue re-runs training, resumed from the checkpoint
        self._insertFunctionStep(self.trainStep, self.epochs.get(), self.batchSize.get(),
                                 self.learningRate.get(), self.timeLimit.get())
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self, partId):
        self._writeParticlesAndReference(requirePoses=True)
        if self.inputModes.get() is not None:
            normalModesToNpz(self.inputModes.get(), self._getModesFile())

    def trainStep(self, *args):
        self._runCli('train', self._trainArgs(), program=self._trainProgram())

    def _nproc(self):
        """One data-parallel process per GPU when several GPUs are given."""
        if self._getDevice().startswith('cuda'):
            return max(1, len(self.getGpuList()))
        return 1

    def _getThreads(self):
        """Threads of each training process: the form's threads (the CPU cores
        of the job on each machine) shared by its processes (one per GPU)."""
        return max(1, super()._getThreads() // self._nproc())

    def _nodes(self, environ=None):
        """Machines of the run: those of the (SLURM) allocation when the whole
        protocol runs as a queue job on GPUs, else 1."""
        if not (self._getDevice().startswith('cuda') and self.useQueueForProtocol()):
            return 1
        return allocationNodes(os.environ if environ is None else environ)

    def _trainProgram(self, environ=None, host=None, port=None):
        """The launcher of the train command: ``Plugin.getProgram`` for this
        machine's GPUs (one process per GPU, torchrun); on a queue job with
        several machines, prefixed by the node launcher (``srun``) that starts
        it on each, with the c10d rendezvous on this machine (``host``,
        ``port``: default this host name and a free port)."""
        from .. import Plugin
        environ = os.environ if environ is None else environ
        nodes = self._nodes(environ)
        if nodes <= 1:
            return Plugin.getProgram(self._nproc())
        endpoint = '%s:%d' % (host or socket.gethostname(), port or freePort())
        rdzvId = environ.get('SLURM_JOB_ID') or 'cfgeodl-%s' % self.strId()
        return '%s %s' % (Plugin.getNodeLauncher(nodes), Plugin.getProgram(
            self._nproc(), nnodes=nodes, rdzvEndpoint=endpoint, rdzvId=rdzvId))

    def createOutputStep(self):
        parts = self.inputParticles.get()
        model = GeoDLModel(modelDir=self._getModelDir(), zdim=self.zdim.get(),
                           box=parts.getXDim(), apix=parts.getSamplingRate(),
                           prior=Prior.at(self.prior.get()))
        cfg = model.loadConfig()
        if cfg.get('zdim'):
            model.setZdim(int(cfg['zdim']))
        if cfg.get('box'):
            model.setBox(int(cfg['box']))
        if cfg.get('apix'):
            model.setSamplingRate(float(cfg['apix']))
        if cfg.get('particle_box') and cfg.get('box') and cfg.get('apix'):
            # trained at a smaller --train-box: the model takes (and crops) the
            # particles of the full grid
            pbox = int(cfg['particle_box'])
            model.setBox(pbox)
            model.setSamplingRate(float(cfg['apix']) * int(cfg['box']) / pbox)
        if cfg.get('prior'):
            model.setPrior(str(cfg['prior']))
        md = ModelDir(self._getModelDir())
        if md.has_reference():
            model.setNumberOfAtoms(md.n_atoms())
        self._defineOutputs(outputModel=model)
        self._defineSourceRelation(self.inputParticles, model)
        self._defineSourceRelation(self.inputReference, model)
        if os.path.exists(md.refined_star_path):  # refined poses back to Scipion
            from .protocol_poses import applyPosedStar
            refined = self._createSetOfParticles()
            applyPosedStar(self.inputParticles.get(), md.refined_star_path, refined)
            self._defineOutputs(outputParticles=refined)
            self._defineTransformRelation(self.inputParticles, refined)

    # --------------------------- UTILS functions ----------------------------
    def _trainArgs(self):
        args = self._particlesAndReferenceArgs() + [
            '--out', self._getModelDir(),
            '--zdim', self.zdim.get(),
            '--epochs', self.epochs.get(),
            '--batch-size', self.batchSize.get(),
            '--lr', self.learningRate.get(),
            '--beta', self.beta.get(),
            '--prior', Prior.at(self.prior.get()),
            '--encoder-inputs', EncoderInputs.at(self.encoderInputs.get()),
            '--seed', self.seed.get(),
            '--threads', self._getThreads(),
            '--device', self._getDevice()]
        if self.allAtoms.get():
            args += ['--n-atoms', 'all']
        elif self.nAtoms.get():
            args += ['--n-atoms', self.nAtoms.get()]
        if self.nmaModes.get():
            args += ['--nma-modes', self.nmaModes.get()]
        if self.refinePoses.get():
            args += ['--refine-poses', '--pose-rot-sd', self.poseRotSd.get(),
                     '--pose-shift-sd', self.poseShiftSd.get()]
        if self.learnAmplitudes.get():
            args += ['--learn-amplitudes']
        if self.timeLimit.get():
            args += ['--time-limit', self.timeLimit.get()]
        if self.trainBox.get():
            args += ['--train-box', self.trainBox.get()]
        if os.path.exists(self._getModesFile()):
            args += ['--modes', self._getModesFile()]
        if self._hasCheckpoint():
            args += ['--resume']
        return args

    def _getModelDir(self):
        return self._absPath('model')

    def _getModesFile(self):
        return self._absPath('normal_modes.npz')

    def _hasCheckpoint(self):
        return ModelDir(self._getModelDir()).has_checkpoint()

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        parts = self.inputParticles.get()
        if parts is None:
            return ['Select the input particles.']
        if parts.getSize() == 0:
            errors.append('The input particle set is empty: select a set with particles.')
        if not parts.hasAlignmentProj():
            errors.append('The input particles have no 3D angles (alignment "%s"); use '
                          'particles from a consensus 3D refinement.' % parts.getAlignment())
        errors += self._validateParticlesAndReference(parts, 'training', sameBox=True,
                                                      pixelTolerance=1e-3)
        if self.nAtoms.get() is not None and self.nAtoms.get() < 0:
            errors.append('The number of pseudo-atoms must be 0 (automatic) or positive.')
        tb, box = self.trainBox.get() or 0, parts.getXDim()
        if tb and (tb < 8 or tb % 2 or (box and tb > box)):
            errors.append('The training box (%d px) must be even, at least 8 px and at most '
                          'the particle box (%s px); 0 trains at the particle box.'
                          % (tb, box))
        if self.refinePoses.get() and not pose_widths_valid(self.poseRotSd.get() or 0,
                                                            self.poseShiftSd.get() or 0):
            errors.append('Pose refinement needs a rotation prior >= 0 deg (0: shifts only) '
                          'and a shift prior > 0 A.')
        if self.nmaModes.get() is not None and self.nmaModes.get() < 0:
            errors.append('The number of normal modes must be 0 (free-form) or positive.')
        if self.inputModes.get() is not None:
            if '--modes' not in coreCommandFlags('train'):
                errors.append('This version of continuousflex_geodl cannot train on '
                              'external (ContinuousFlex) normal modes; leave that input '
                              'empty and set "Normal modes of the decoder" instead.')
            if self.nmaModes.get():
                errors.append('Give either ContinuousFlex normal modes or a number of '
                              'automatic normal modes, not both.')
        errors += self._validateGpus()
        return errors

    def _validateGpus(self):
        """GPU list (one training process per GPU) and a CUDA build of torch."""
        if not self.useGpu.get():
            return []
        gpus = self.getGpuList()
        if not gpus:
            return ['Use GPU is on but no GPU id is given.']
        errors = []
        if len(set(gpus)) < len(gpus):
            errors.append('The GPU list (%s) names a GPU more than once: one training '
                          'process runs per listed GPU, and two cannot share a GPU; list '
                          'each GPU once.' % self.gpuList.get())
        if self.batchSize.get() and self.batchSize.get() % len(gpus):
            errors.append('With %d GPUs the batch size (%d) must be a multiple of %d (each '
                          'GPU takes an equal share of every batch); e.g. %d.'
                          % (len(gpus), self.batchSize.get(), len(gpus),
                             max(1, round(self.batchSize.get() / len(gpus))) * len(gpus)))
        from .. import Plugin
        python = Plugin.getPython()
        build = torchBuild(python)
        if build is not None and not build['gpu']:
            errors.append('Use GPU is on but the torch of %s is a CPU-only build (torch %s): '
                          'install a CUDA build of torch in that environment (see '
                          'https://pytorch.org/get-started/locally, e.g. "%s -m pip install '
                          'torch --index-url https://download.pytorch.org/whl/cu124"), or '
                          'set Use GPU to No.' % (python, build['version'], python))
        return errors

    def _warnings(self):
        warnings = []
        parts = self.inputParticles.get()
        if parts is not None and parts.getSize() < 10 * self.batchSize.get():
            warnings.append('Only %d particles for a batch size of %d: the model will '
                            'see very few batches per epoch.'
                            % (parts.getSize(), self.batchSize.get()))
        return warnings

    def _summary(self):
        lines = []
        if self.inputParticles.get() is not None:
            lines.append('Particles: %d' % self.inputParticles.get().getSize())
        lines.append('Latent dimension %d, prior *%s*, %d epochs, batch %d, lr %g%s.'
                     % (self.zdim.get(), const.PRIORS[self.prior.get()], self.epochs.get(),
                        self.batchSize.get(), self.learningRate.get(),
                        ', poses refined' if self.refinePoses.get() else ''))
        md = ModelDir(self._getModelDir())
        hist = md.read_history() if md.has_history() else None
        if isinstance(hist, list) and hist and isinstance(hist[-1], dict):
            items = ', '.join('%s %.4g' % (k, v) for k, v in hist[-1].items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool))
            lines.append('Epochs done: %d. Last epoch: %s' % (len(hist), items))
        try:
            fit = md.read_reference_fit()  # map or atomic-model reference
        except (OSError, ValueError):
            fit = None
        if isinstance(fit, dict):
            def num(key, fmt):
                v = fit.get(key)
                return fmt % v if isinstance(v, (int, float)) else 'n/a'
            lines.append('Reference fit: FSC 0.5 at %s A (0.143 at %s A), %s '
                         'pseudo-atoms, %s per residue-equivalent.'
                         % (num('resolution_fsc05', '%.1f'), num('resolution_fsc0143', '%.1f'),
                            num('n_atoms', '%d'), num('atoms_per_residue', '%.2f'))
                         + (' (vs a map simulated from the model)'
                            if fit.get('against') == 'model' else ''))
        if not self.hasAttribute('outputModel'):
            lines.append('Output model not ready yet.')
        return lines

    def _methods(self):
        if self.inputParticles.get() is None:
            return []
        return ['We trained a point-cloud deformation model (encoder, point neural network '
                'decoder over Gaussian pseudo-atoms, %s prior, latent dimension %d) on %d '
                'particles for %d epochs with continuousflex_geodl, with an image loss on '
                'rendered, CTF-modulated projections and optimal-transport regularisation '
                '[Feydy2019geomloss].'
                % (const.PRIORS[self.prior.get()], self.zdim.get(),
                   self.inputParticles.get().getSize(), self.epochs.get())]

    def _citations(self):
        cites = ['Feydy2019geomloss', 'Charlier2021keops', 'Sverrisson2021dmasif',
                 'Zhong2021cryodrgn']
        if self.prior.get() == 0:
            cites.append('cryoTWIN')
        if self.inputModes.get() is not None or self.nmaModes.get():
            cites += ['Jin2014hemnma', 'Harastani2022continuousflex']
        return cites


# --------------------------- launch helpers (no Scipion state) ---------------
def allocationNodes(environ):
    """Number of machines of the SLURM job this process runs in (1 outside one)."""
    for key in ('SLURM_JOB_NUM_NODES', 'SLURM_NNODES'):
        value = str(environ.get(key, '')).strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def freePort():
    """A TCP port free on this machine now (for torchrun's c10d rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('', 0))
        return s.getsockname()[1]


_TORCH_BUILD = r"""
import importlib.util, json, os
spec = importlib.util.find_spec('torch')
ns = {}
if spec is not None and spec.submodule_search_locations:
    with open(os.path.join(list(spec.submodule_search_locations)[0], 'version.py')) as f:
        exec(f.read(), ns)
print(json.dumps(None if spec is None else dict(
    version=ns.get('__version__'), cuda=ns.get('cuda'), hip=ns.get('hip'))))
"""


@functools.lru_cache(maxsize=8)
def torchBuild(python):
    """The torch build of interpreter ``python``: dict(version, cuda, hip, gpu)
    read from torch/version.py without importing torch (fast; no GPU needed),
    or None when it cannot be told (no torch there: ``validateInstallation``
    reports it)."""
    try:
        out = subprocess.run([python, '-c', _TORCH_BUILD], capture_output=True, text=True,
                             timeout=60)
        info = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 \
            else None
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None
    if not isinstance(info, dict) or not info.get('version'):
        return None
    info['gpu'] = bool(info.get('cuda') or info.get('hip'))
    return info

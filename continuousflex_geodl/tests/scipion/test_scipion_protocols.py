"""Protocols without a project: their command lines parse with the real CLI,
their validation catches bad input before launch, selections are exact."""
import os

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

if _SKIP is None:
    from pwem.constants import ALIGN_2D, ALIGN_NONE, ALIGN_PROJ
    from pwem.objects import AtomStruct, Volume

    from continuousflex_geodl.objects import GeoDLModel
    from continuousflex_geodl.protocols import (GeoDLProtPredict, GeoDLProtSimulate,
                                                GeoDLProtTrain)
    from continuousflex_geodl.protocols.protocol_subset import (
        SELECT_BALL, SELECT_BOX, SELECT_DG, SELECT_POLYGON, SELECT_STATES, parse_floats,
        parse_ints, select_mask)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Protocols outside a project resolve paths from the cwd: keep them in tmp."""
    monkeypatch.chdir(tmp_path)


def _parse(command, args):
    """Parse with the real ``continuousflex-geodl`` parser (exits on a bad flag)."""
    from continuousflex_geodl.core.cli import build_parser
    return build_parser().parse_args(command.split() + [str(a) for a in args])


def _particles(tmp_path, n=4, box=32, apix=2.0, ctf=True, align=ALIGN_PROJ, name='p'):
    return scipion_env.particle_set(
        str(tmp_path / ('%s.sqlite' % name)), str(tmp_path / 'stack.mrcs'), n, apix, box=box,
        ctf=ctf, alignment=align, transforms=[np.eye(4)] * n if align == ALIGN_PROJ else None)


# ------------------------------------------------------------ command lines -

def test_simulate_command_line_parses_with_the_core_cli():
    prot = GeoDLProtSimulate(nParticles=123, box=48, apix=1.5, snr=0.05, motion=1,
                             population=2, seed=9)
    a = _parse('simulate', prot._simulateArgs())
    assert (a.n_particles, a.box, a.apix, a.snr, a.motion, a.population, a.seed) == \
        (123, 48, 1.5, 0.05, 'linear', 'grid', 9)
    assert os.path.isabs(a.out)


def test_train_command_line_parses_and_carries_every_setting(tmp_path):
    prot = GeoDLProtTrain(zdim=6, epochs=7, batchSize=16, learningRate=5e-4, prior=1,
                          nmaModes=5, nAtoms=300, refinePoses=True, encoderInputs=2,
                          beta=0.25, timeLimit=30.0, seed=4, numberOfThreads=3,
                          poseRotSd=0.0, poseShiftSd=1.5)
    prot.setWorkingDir(str(tmp_path / 'run'))
    prot.inputParticles.set(_particles(tmp_path))
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    a = _parse('train', prot._trainArgs())
    assert (a.zdim, a.epochs, a.batch_size, a.lr, a.prior, a.nma_modes, a.n_atoms,
            a.refine_poses, a.encoder_inputs, a.beta, a.time_limit, a.seed, a.threads,
            a.device, a.resume) == \
        (6, 7, 16, 5e-4, 'gaussian', 5, '300', True, 'image', 0.25, 30.0, 4, 3, 'cpu', False)
    assert (a.pose_rot_sd, a.pose_shift_sd) == (0.0, 1.5)
    assert a.reference == str(tmp_path / 'ref.pdb')
    prot.allAtoms.set(True)
    assert _parse('train', prot._trainArgs()).n_atoms == 'all'
    # converted ContinuousFlex modes are handed to the core's --modes
    os.makedirs(os.path.dirname(prot._getModesFile()), exist_ok=True)
    open(prot._getModesFile(), 'w').close()
    assert _parse('train', prot._trainArgs()).modes == prot._getModesFile()
    # a checkpoint in the model folder -> Continue resumes
    ck = os.path.join(prot._getModelDir(), 'checkpoints')
    assert ck.startswith(str(tmp_path))
    os.makedirs(ck)
    open(os.path.join(ck, 'last.pt'), 'w').close()
    assert _parse('train', prot._trainArgs()).resume


def test_predict_command_line_parses(tmp_path):
    prot = GeoDLProtPredict(batchSize=64, numberOfThreads=2, refineSteps=7)
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32, apix=2.0))
    prot.inputParticles.set(_particles(tmp_path))
    a = _parse('infer', prot._inferArgs())
    assert (a.model, a.batch_size, a.threads, a.device, a.refine_steps) == (
        str(tmp_path / 'model'), 64, 2, 'cpu', 7)
    assert a.out.endswith('.npy') and not a.ignore_refined_poses
    prot.ignoreRefinedPoses.set(True)
    assert _parse('infer', prot._inferArgs()).ignore_refined_poses


def test_train_summary_reports_the_map_fit_when_the_model_has_one(tmp_path):
    from continuousflex_geodl.core.artifacts import ModelDir
    prot = GeoDLProtTrain()
    prot.setWorkingDir(str(tmp_path / 'run'))
    assert not any('Reference fit' in line for line in prot._summary())  # no file: no line
    md = ModelDir(prot._getModelDir()).make()
    md.write_reference_fit(dict(resolution_fsc05=6.34, resolution_fsc0143=4.0, n_atoms=200,
                                atoms_per_residue=0.845, real_space_cc=float('nan')))
    assert md.read_reference_fit()['real_space_cc'] is None  # NaN written as null
    line = [x for x in prot._summary() if 'Reference fit' in x]
    assert line == ['Reference fit: FSC 0.5 at 6.3 A (0.143 at 4.0 A), 200 '
                    'pseudo-atoms, 0.84 per residue-equivalent.']


# ------------------------------------------------------------- validation ---

def test_train_validation_catches_bad_input(tmp_path):
    prot = GeoDLProtTrain()
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    prot.inputParticles.set(_particles(tmp_path, ctf=False, align=ALIGN_NONE, name='a'))
    errors = ' '.join(prot._validate())
    assert 'no CTF' in errors and 'no 3D angles' in errors
    prot.inputParticles.set(_particles(tmp_path, box=33, name='b'))
    assert any('must be even' in e for e in prot._validate())
    good = _particles(tmp_path, name='c')
    prot.inputParticles.set(good)
    assert prot._validate() == []
    vol = Volume()
    vol.setFileName(str(tmp_path / 'map.mrc'))
    vol.setSamplingRate(1.0)
    prot.inputReference.set(vol)
    import mrcfile
    with mrcfile.new(str(tmp_path / 'map.mrc'), overwrite=True) as m:
        m.set_data(np.zeros((40, 40, 40), np.float32))
    errors = ' '.join(prot._validate())
    assert 'box (40 px) differs' in errors and 'pixel size' in errors


def test_train_rejects_external_modes_when_core_cannot_use_them(tmp_path):
    from pwem.objects import SetOfNormalModes
    from continuousflex_geodl.protocols.protocol_base import coreCommandFlags
    prot = GeoDLProtTrain()
    prot.inputParticles.set(_particles(tmp_path))
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    prot.inputModes.set(SetOfNormalModes(filename=str(tmp_path / 'modes.sqlite')))
    errors = prot._validate()
    if '--modes' in coreCommandFlags('train'):
        assert not any('external' in e for e in errors)
    else:
        assert any('external (ContinuousFlex) normal modes' in e for e in errors)
    prot.nmaModes.set(4)
    assert any('not both' in e for e in prot._validate())


def test_predict_validation_checks_model_compatibility(tmp_path):
    prot = GeoDLProtPredict()
    (tmp_path / 'model').mkdir()
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=64,
                                   apix=1.0))
    prot.inputParticles.set(_particles(tmp_path, box=32, apix=2.0, align=ALIGN_2D))
    errors = ' '.join(prot._validate())
    assert 'box of 32 px' in errors and '2.0000 A/px' in errors and 'no 3D angles' in errors
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'gone'), zdim=2, box=32,
                                   apix=2.0))
    prot.inputParticles.set(_particles(tmp_path, name='ok'))
    assert any('does not exist' in e for e in prot._validate())


def test_predict_takes_full_size_or_precropped_particles_of_a_train_box_model(tmp_path):
    """A model trained at --train-box 32 on 64 px particles (1 A/px): the model object
    holds the full grid, config.json the training grid; particles on either grid (or
    any larger box of the same 64 A field of view) are accepted, others are not."""
    from continuousflex_geodl.core.artifacts import ModelDir
    from continuousflex_geodl.core.particles import grid_relation
    md = ModelDir(str(tmp_path / 'model')).make()
    md.write_config(dict(box=32, apix=2.0, particle_box=64, zdim=2))
    prot = GeoDLProtPredict()
    prot.inputModel.set(GeoDLModel(modelDir=md.path, zdim=2, box=64, apix=1.0))

    def grid_errors(box, apix, name):
        prot.inputParticles.set(_particles(tmp_path, box=box, apix=apix, name=name))
        return [e for e in prot._validate() if 'not on the grid' in e]

    assert grid_errors(64, 1.0, 'full') == []
    assert grid_errors(32, 2.0, 'precropped') == []
    assert grid_errors(48, 64 / 48, 'same_view') == []
    assert grid_errors(32, 1.0, 'halfview') and grid_errors(16, 4.0, 'smaller')
    assert 'trained at (32 px, 2.0000 A/px' in grid_errors(48, 1.0, 'other')[0]
    # the same rule as the core's inference (on_model_grid)
    assert [grid_relation(b, a, 32, 2.0) for b, a in ((32, 2.0), (64, 1.0), (16, 4.0),
                                                      (32, 1.0))] == ['same', 'crop', None,
                                                                      None]


def test_simulate_validation():
    assert GeoDLProtSimulate(box=33)._validate()
    assert GeoDLProtSimulate(box=8)._validate()
    assert GeoDLProtSimulate(box=64)._validate() == []


# ------------------------------------------------------------- selections ---

def test_selection_masks_are_exact():
    rng = np.random.default_rng(0)
    states = rng.integers(1, 5, 200)
    np.testing.assert_array_equal(select_mask(SELECT_STATES, states=states, state_ids=[2, 4]),
                                  (states == 2) | (states == 4))
    zred = rng.uniform(-2, 2, (200, 2))
    m = select_mask(SELECT_BOX, zred=zred, box=(-1, 0.5, 0, 2))
    np.testing.assert_array_equal(m, (zred[:, 0] >= -1) & (zred[:, 0] <= 0.5) &
                                  (zred[:, 1] >= 0) & (zred[:, 1] <= 2))
    # polygon: a unit square typed as vertices = the same box
    sq = np.array([[-1, 0], [0.5, 0], [0.5, 2], [-1, 2]])
    np.testing.assert_array_equal(select_mask(SELECT_POLYGON, zred=zred, polygon=sq),
                                  select_mask(SELECT_BOX, zred=zred, box=(-1, 0.5, 0, 2)))
    dG = rng.uniform(0, 5, 200)
    dG[3] = np.nan
    m = select_mask(SELECT_DG, dG=dG, max_dG=2.0)
    np.testing.assert_array_equal(m, np.nan_to_num(dG, nan=99) <= 2.0)
    z = rng.normal(size=(200, 3))
    c = np.array([0.2, -0.1, 0.3])
    m = select_mask(SELECT_BALL, z=z, center=c, radius=1.0)
    np.testing.assert_array_equal(m, ((z - c) ** 2).sum(1) <= 1.0)
    assert parse_ints('1 3, 5-7') == [1, 3, 5, 6, 7]
    assert parse_floats('0.5 -1.2, 3') == [0.5, -1.2, 3.0]
    with pytest.raises(ValueError):
        parse_ints('a')


def test_landscape_agreement_known_answers():
    from continuousflex_geodl.protocols.protocol_compare import landscape_agreement
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 2))
    same = landscape_agreement(a, a.copy(), k=10)
    assert same['neighbourhood_overlap'] == pytest.approx(1.0)
    # the kNN error of a perfect landscape is the (small) floor of the true space
    assert same['knn_error_a_in_b'] < 0.3
    assert same['spearman_a_predicts_b'] == pytest.approx([1.0, 1.0])
    # a rotated, scaled copy is the same landscape
    R = np.array([[0.6, -0.8], [0.8, 0.6]]) * 3.0
    rot = landscape_agreement(a, a @ R.T, k=10)
    assert rot['neighbourhood_overlap'] == pytest.approx(1.0)
    assert rot['spearman_b_predicts_a'] == pytest.approx([1.0, 1.0])
    assert rot['knn_error_a_in_b'] == pytest.approx(same['knn_error_a_in_b'])
    assert rot['canonical_correlations'] == pytest.approx([1.0, 1.0])
    # unrelated coordinates: chance level
    other = landscape_agreement(a, rng.normal(size=(300, 2)), k=10)
    assert other['neighbourhood_overlap'] < 0.15
    assert other['knn_error_a_in_b'] > 0.8 > 3 * same['knn_error_a_in_b']
    assert max(other['spearman_a_predicts_b']) < 0.3
    assert max(other['canonical_correlations']) < 0.3


def test_structures_points_and_validation(tmp_path):
    from continuousflex_geodl.protocols.protocol_structures import (
        GeoDLProtStructures, linear_path, parse_points)
    np.testing.assert_allclose(parse_points('0 1; 2 3\n4 5', 2), [[0, 1], [2, 3], [4, 5]])
    with pytest.raises(ValueError, match='needs 3 numbers'):
        parse_points('0 1', 3)
    np.testing.assert_allclose(linear_path([0, 0], [2, -4], 3), [[0, 0], [1, -2], [2, -4]])
    prot = GeoDLProtStructures(pathType=1, startPoint='0 0', endPoint='1', nPoints=4)
    prot.inputModel.set(GeoDLModel(modelDir=str(tmp_path), zdim=2, box=32, apix=2.0))
    assert any('needs 2 numbers' in e for e in prot._validate())
    prot.endPoint.set('1 1')
    assert prot._validate() == []
    prot.nPoints.set(1)
    assert any('at least 2' in e for e in prot._validate())


def test_multi_gpu_training_runs_data_parallel(tmp_path):
    from continuousflex_geodl import Plugin
    prot = GeoDLProtTrain(useGpu=True, gpuList='0,1')
    assert prot._getDevice() == 'cuda' and prot._nproc() == 2
    prog = Plugin.getProgram(prot._nproc())
    assert '-m torch.distributed.run' in prog and '--nproc-per-node 2' in prog
    assert prog.endswith('-m continuousflex_geodl')
    assert Plugin.getEnviron(gpus=prot.getGpuList())['CUDA_VISIBLE_DEVICES'] == '0,1'
    cpu = GeoDLProtTrain(useGpu=False, gpuList='0,1')
    assert cpu._getDevice() == 'cpu' and cpu._nproc() == 1
    assert Plugin.getProgram(1).endswith('-m continuousflex_geodl')
    # torchrun accepts exactly these launcher options (it parses them itself)
    from torch.distributed.run import get_args_parser
    launcher = prog.split('-m torch.distributed.run', 1)[1].rsplit('-m continuousflex_geodl', 1)[0]
    ns = get_args_parser().parse_args(launcher.split() + ['-m', 'x'])
    assert ns.standalone and ns.nproc_per_node == '2' and ns.module


def _torchrun_args(program):
    """torchrun's own parse of the launcher options of ``program``."""
    from torch.distributed.run import get_args_parser
    launcher = program.split('-m torch.distributed.run', 1)[1].rsplit('-m continuousflex_geodl',
                                                                     1)[0]
    return get_args_parser().parse_args(launcher.split() + ['-m', 'x'])


def test_train_launch_maps_the_gpu_list_to_processes_and_machines(tmp_path):
    """One torchrun process per listed GPU; in a queue job of several
    machines (SLURM allocation), srun starts it on each with a c10d
    rendezvous on this machine; on the CPU, one process."""
    from continuousflex_geodl import Plugin
    for gpus, n in (('0', 1), ('1,3', 2), ('0-3', 4)):
        prot = GeoDLProtTrain(useGpu=True, gpuList=gpus)
        prog = prot._trainProgram(environ={'SLURM_JOB_NUM_NODES': '2'})
        assert prog == Plugin.getProgram(n)  # not a queue job: this machine only
        if n == 1:
            assert 'torch.distributed.run' not in prog
        else:
            ns = _torchrun_args(prog)
            assert ns.standalone and ns.nproc_per_node == str(n) and ns.nnodes == '1'
    prot = GeoDLProtTrain(useGpu=True, gpuList='0,1,2,3', numberOfThreads=10)
    assert prot._getThreads() == 2  # the machine's cores shared by its 4 processes
    prot.useQueueForProtocol = lambda: True
    slurm = {'SLURM_JOB_NUM_NODES': '3', 'SLURM_JOB_ID': '4242'}
    prog = prot._trainProgram(environ=slurm, host='gpu07', port=29611)
    assert prog.startswith('srun --nodes=3 --ntasks-per-node=1 ')
    ns = _torchrun_args(prog)
    assert (ns.nnodes, ns.nproc_per_node, ns.rdzv_backend, ns.rdzv_endpoint, ns.rdzv_id) == \
        ('3', '4', 'c10d', 'gpu07:29611', '4242') and not ns.standalone
    # a one-machine queue job, and the CPU: no node launcher
    assert prot._trainProgram(environ={'SLURM_JOB_NUM_NODES': '1'}) == Plugin.getProgram(4)
    cpu = GeoDLProtTrain(useGpu=False, gpuList='0,1')
    cpu.useQueueForProtocol = lambda: True
    assert cpu._trainProgram(environ=slurm) == Plugin.getProgram(1)
    assert 'torch.distributed.run' not in Plugin.getProgram(1)


def test_train_runs_on_the_gpus_the_executor_assigns(tmp_path):
    """Through a queue Scipion renumbers the GPUs (the job sees its own):
    CUDA_VISIBLE_DEVICES comes from the steps executor, else from the form."""
    from pyworkflow.protocol.executor import StepExecutor
    prot = GeoDLProtTrain(useGpu=True, gpuList='2,3')
    assert prot._getRunGpus() == [2, 3]
    prot.setStepsExecutor(StepExecutor(None, gpuList=[0, 1]))
    assert prot._getRunGpus() == [0, 1]
    ran = {}
    prot.runJob = lambda program, arguments, **kw: ran.update(program=program, **kw)
    prot._runCli('train', ['--epochs', 1], program='PROGRAM')
    assert ran['program'] == 'PROGRAM' and ran['env']['CUDA_VISIBLE_DEVICES'] == '0,1'


def test_readme_hosts_conf_loads_and_asks_slurm_for_the_gpus(tmp_path):
    """The SLURM hosts.conf of README "GPUs and clusters", read by pyworkflow:
    one task per machine, the protocol's GPU count and threads per machine."""
    from pyworkflow.protocol.hosts import HostConfig
    readme = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'README.rst')
    text = open(readme).read()
    lines = []
    for line in text[text.index('    [localhost]\n'):].splitlines():
        if line.strip() and not line.startswith('    '):
            break
        lines.append(line[4:])
    conf = tmp_path / 'hosts.conf'
    conf.write_text('\n'.join(lines).rstrip() + '\n')
    queue = HostConfig.load(str(conf))['localhost'].queueSystem
    assert queue.name.get() == 'SLURM' and 'NODES' in [p[0] for p in queue.queues['gpu']]
    prot = GeoDLProtTrain(useGpu=True, gpuList='0-3', numberOfThreads=8)
    params = {p[0]: p[1] for p in queue.queues['gpu']}
    script = queue.submitTemplate.get() % dict(
        params, NODES='2', JOB_NAME='7', JOB_QUEUE='gpu', JOB_LOGS='/logs/run7',
        JOB_THREADS=prot.numberOfThreads.get(), GPU_COUNT=len(prot.getGpuList()),
        JOB_COMMAND='TRAIN')
    assert script.startswith('#!/bin/bash\n') and script.rstrip().endswith('TRAIN')
    for opt in ('--nodes=2', '--ntasks-per-node=1', '--gres=gpu:4', '--cpus-per-task=8'):
        assert '#SBATCH %s\n' % opt in script


def test_train_validation_of_the_gpus(tmp_path):
    import torch
    from continuousflex_geodl.protocols.protocol_train import torchBuild
    from continuousflex_geodl import Plugin
    prot = GeoDLProtTrain(useGpu=True, gpuList='0-3', batchSize=30)
    prot.inputReference.set(AtomStruct(filename=str(tmp_path / 'ref.pdb')))
    prot.inputParticles.set(_particles(tmp_path))
    build = torchBuild(Plugin.getPython())
    # the build read from torch/version.py is the one torch reports
    assert (build['version'], build['cuda']) == (torch.__version__, torch.version.cuda)
    cpu_build = torch.version.cuda is None and torch.version.hip is None
    errors = ' '.join(prot._validate())
    assert 'must be a multiple of 4' in errors and 'e.g. 32' in errors
    assert ('CPU-only build' in errors and 'download.pytorch.org' in errors) == cpu_build
    prot.batchSize.set(32)
    prot.gpuList.set('1,1')
    assert 'more than once' in ' '.join(prot._validate())
    prot.gpuList.set('0,1')
    assert [e for e in prot._validate() if 'CPU-only' not in e] == []
    prot.gpuList.set('')
    assert any('no GPU id' in e for e in prot._validate())
    prot.useGpu.set(False)
    prot.batchSize.set(30)
    assert prot._validate() == []


def test_landscape_and_path_command_lines_parse(tmp_path):
    from continuousflex_geodl.protocols import GeoDLProtLandscape, GeoDLProtStructures
    (tmp_path / 'model').mkdir()
    land = GeoDLProtLandscape(embedding=1, nStates='bic', stateMethod=1, usePrior=True,
                              barrier=2.0, minPopulation=0.05, units=1, temperature=277.0,
                              bootstrap=5, feBootstrap=7, seed=3)
    land.setWorkingDir(str(tmp_path / 'land'))
    land.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32, apix=2.0))
    a = _parse('landscape analyze', land._analyzeArgs())
    assert (a.embedding, a.n_states, a.method, a.barrier, a.min_population, a.units,
            a.temperature, a.bootstrap, a.fe_bootstrap, a.seed, a.model, a.prior) == \
        ('umap', 'bic', 'kmeans', 2.0, 0.05, 'kcal/mol', 277.0, 5, 7, 3,
         str(tmp_path / 'model'), str(tmp_path / 'model'))
    assert a.latents.startswith(str(tmp_path / 'land'))
    path = GeoDLProtStructures(pathType=2, pathKind=1, nPoints=6, fromState=2, toState=3)
    path.setWorkingDir(str(tmp_path / 'path'))
    path.inputLandscape.set(land)
    p = _parse('landscape path', path._pathArgs())
    assert (p.kind, p.n_points, p.from_state, p.to_state, p.landscape, p.prior) == \
        ('ridgeline', 6, 1, 2, land._getLandscapeDir(), str(tmp_path / 'model'))
    assert path._getModelDir() == str(tmp_path / 'model')


def test_pathway_validation_reads_the_landscape_states(tmp_path):
    import json
    from continuousflex_geodl.protocols import GeoDLProtLandscape, GeoDLProtStructures
    (tmp_path / 'model').mkdir()
    with open(tmp_path / 'model' / 'config.json', 'w') as f:
        json.dump({'zdim': 2, 'apix': 2.0}, f)
    land = GeoDLProtLandscape()
    land.setWorkingDir(str(tmp_path / 'land'))
    land.inputModel.set(GeoDLModel(modelDir=str(tmp_path / 'model'), zdim=2, box=32, apix=2.0))
    os.makedirs(land._getLandscapeDir())
    with open(os.path.join(land._getLandscapeDir(), 'states.json'), 'w') as f:
        json.dump({'n_states': 1}, f)
    path = GeoDLProtStructures(pathType=2, pathKind=0, nPoints=5)
    path.inputLandscape.set(land)
    assert any('single state' in e for e in path._validate())
    path.pathKind.set(2)  # pca works with one state
    assert path._validate() == []
    with open(os.path.join(land._getLandscapeDir(), 'states.json'), 'w') as f:
        json.dump({'n_states': 3}, f)
    path.pathKind.set(0)
    path.fromState.set(1)
    path.toState.set(4)
    assert any('3 states' in e for e in path._validate())
    path.toState.set(1)
    assert any('must differ' in e for e in path._validate())
    path.toState.set(3)
    assert path._validate() == []

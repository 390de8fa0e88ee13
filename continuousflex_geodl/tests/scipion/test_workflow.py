"""The demo chain end to end in a real headless Scipion project (tiny settings).

``workflow.run_workflow`` runs simulate -> train (1 epoch) -> predict ->
landscape -> pathway as subprocess protocols, as the GUI does, then the
viewers.  Checked: every output has the right type, size, attributes and
files, and they agree with one another (latents on the particles = the
latent file, pathway maps = the maps the ChimeraX script plays, in order;
GIF frames = 2 x path points - 2; PDB models = path points); a protocol
that fails is reported by name with its log file.
"""
import json
import os

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

N, BOX, APIX, ZDIM, POINTS = 160, 32, 3.0, 2, 4


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    from continuousflex_geodl.workflow import run_workflow
    out = str(tmp_path_factory.mktemp('workflow'))
    res = run_workflow(out, n_particles=N, seed=1, epochs=1, box=BOX, apix=APIX, zdim=ZDIM,
                       n_points=POINTS, threads=2, bootstrap=(2, 2), project='cfgeodl_wf_test')
    res['out'] = out
    cwd = os.getcwd()
    os.chdir(res['project'].path)  # Scipion file names are relative to the project
    try:
        yield res
    finally:
        os.chdir(cwd)


def _models_in_pdb(fn):
    with open(fn) as f:
        text = f.read()
    return max(1, text.count('\nMODEL '))


def _mrc_info(fn):
    import mrcfile
    with mrcfile.open(fn, permissive=True, header_only=True) as m:
        return (int(m.header.nz), int(m.header.ny), int(m.header.nx)), float(m.voxel_size.x)


def test_every_protocol_finished_with_its_outputs(chain):
    from pwem.objects import (AtomStruct, SetOfClassesFlex, SetOfParticles,
                              SetOfParticlesFlex, SetOfVolumesFlex)
    from continuousflex_geodl.objects import GeoDLModel
    steps = chain['steps']
    assert list(steps) == ['simulate', 'train', 'predict', 'landscape', 'pathway']
    for prot in steps.values():
        assert prot.isFinished(), prot.getRunName()
    sim = steps['simulate']
    parts = sim.outputParticles
    assert isinstance(parts, SetOfParticles) and parts.getSize() == N
    assert parts.hasCTF() and parts.hasAlignmentProj()
    assert parts.getXDim() == BOX and parts.getSamplingRate() == pytest.approx(APIX)
    assert isinstance(sim.outputReference, AtomStruct)
    assert os.path.exists(sim.outputReference.getFileName())

    model = steps['train'].outputModel
    assert isinstance(model, GeoDLModel)
    assert (model.getZdim(), model.getBox()) == (ZDIM, BOX)
    assert model.getSamplingRate() == pytest.approx(APIX)
    with open(model.getHistoryFile()) as f:
        assert len(json.load(f)) == 1               # --epochs 1, no time limit

    pred = steps['predict'].outputParticles
    assert isinstance(pred, SetOfParticlesFlex) and pred.getSize() == N
    z = np.load(chain['outputs']['latents'])
    assert z.shape == (N, ZDIM) and np.isfinite(z).all()
    for i, p in enumerate(pred.iterItems(orderBy='id')):
        np.testing.assert_allclose(p.getZFlex(), z[i], rtol=1e-5, atol=1e-6)

    land = steps['landscape']
    st = json.load(open(os.path.join(chain['outputs']['landscape'], 'states.json')))
    n_states = st['n_states']
    assert isinstance(land.outputParticles, SetOfParticlesFlex)
    assert land.outputParticles.getSize() == N
    from continuousflex_geodl import constants as const
    found = [int(getattr(p, const.ATTR_STATE).get()) for p in land.outputParticles]
    assert set(found) <= set(range(1, n_states + 1))
    assert all(getattr(p, const.ATTR_DG).get() >= 0 for p in land.outputParticles)
    classes = land.outputClasses
    assert isinstance(classes, SetOfClassesFlex) and classes.getSize() == n_states
    assert sum(c.getSize() for c in classes) == N
    vols = land.outputVolumes
    assert isinstance(vols, SetOfVolumesFlex) and vols.getSize() == n_states
    for v in vols:
        assert _mrc_info(v.getFileName()) == ((BOX,) * 3, pytest.approx(APIX))
    assert _models_in_pdb(land.outputStructures.getFileName()) == n_states


def test_pathway_outputs_are_in_path_order(chain):
    from pwem.objects import AtomStruct, SetOfVolumesFlex
    path = chain['steps']['pathway']
    vols = path.outputVolumes
    assert isinstance(vols, SetOfVolumesFlex) and vols.getSize() == POINTS
    pts = np.load(path._getExtraPath('pathway', 'path_latents.npy'))
    assert pts.shape == (POINTS, ZDIM)
    files = []
    for i, v in enumerate(vols.iterItems(orderBy='id')):
        np.testing.assert_allclose(v.getZFlex(), pts[i], rtol=1e-5, atol=1e-6)
        assert _mrc_info(v.getFileName()) == ((BOX,) * 3, pytest.approx(APIX))
        files.append(os.path.abspath(v.getFileName()))
    assert isinstance(path.outputStructures, AtomStruct)
    assert _models_in_pdb(path.outputStructures.getFileName()) == POINTS
    assert chain['outputs']['pathway_maps'] == files


def test_viewers_wrote_figures_animation_and_chimerax_script(chain):
    from PIL import Image
    files = chain['files']
    pngs = {'training_curves', 'latents', 'latent_density', 'free_energy', 'particles_dG',
            'particles_state', 'particles_attr', 'pathway_map'}
    assert pngs <= set(files), sorted(pngs - set(files))
    for name in pngs:
        with Image.open(files[name]) as im:
            assert im.format == 'PNG' and min(im.size) > 100, name
    with Image.open(files['pathway_animation']) as im:
        assert im.format == 'GIF' and im.n_frames == 2 * POINTS - 2
    cxc = files['pathway_cxc']
    folder = os.path.dirname(cxc)
    opened = [os.path.normpath(os.path.join(folder, w.strip('"')))
              for w in open(cxc).read().split() if w.strip('"').endswith('.mrc')]
    assert opened == chain['outputs']['pathway_maps']
    pdb = chain['steps']['pathway'].outputStructures.getFileName()
    assert open(files['pathway_pdb']).read() == open(pdb).read()
    # results.json lists every output, all existing
    with open(os.path.join(chain['out'], 'results', 'results.json')) as f:
        info = json.load(f)
    assert info['project'] == os.path.abspath(chain['project'].path)
    for fn in list(info['results'].values()) + info['pathway_maps'] + info['state_maps'] + \
            [info['model'], info['latents'], info['landscape']]:
        assert os.path.exists(fn), fn


def test_a_failing_protocol_is_reported_with_its_log(chain):
    """Prediction with a model whose weights are gone fails in its worker: the
    error names the run and its log file."""
    from continuousflex_geodl.protocols import GeoDLProtPredict
    from continuousflex_geodl.workflow import run_protocol
    proj, steps = chain['project'], chain['steps']
    model_dir = steps['train'].outputModel.getModelDir()
    hidden = []
    for name in ('weights.pt', 'checkpoints'):
        src = os.path.join(model_dir, name)
        if os.path.exists(src):
            os.rename(src, src + '.hidden')
            hidden.append(src)
    try:
        pred = proj.newProtocol(GeoDLProtPredict, numberOfThreads=1)
        pred.inputModel.set(steps['train'])
        pred.inputModel.setExtended('outputModel')
        pred.inputParticles.set(steps['simulate'])
        pred.inputParticles.setExtended('outputParticles')
        with pytest.raises(RuntimeError) as err:
            run_protocol(proj, pred, log=lambda *a: None)
    finally:
        for src in hidden:
            os.rename(src + '.hidden', src)
    msg = str(err.value)
    assert pred.getRunName() in msg and 'failed' in msg
    log = os.path.abspath(os.path.join(proj.path, pred.getLogPaths()[0]))
    assert log in msg and os.path.exists(log)
    assert 'weights.pt' in msg                     # the worker's own explanation

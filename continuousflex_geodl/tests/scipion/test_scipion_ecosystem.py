"""ContinuousFlex's and flexutils' own classes in a real headless Scipion project.

ContinuousFlex (scipion-em-continuousflex, PyPI):

* its NMA protocol (``FlexProtNMA``) outputs a ``pwem.objects.SetOfNormalModes``
  (it has no objects module of its own) built by its ``createOutputStep`` from
  the ``modes.xmd`` and ``modes/vec.N`` files that its Xmipp/ElNemo steps write;
  the test writes those files (known modes) and runs ContinuousFlex's
  ``createOutputStep``;
* its HEMNMA protocol (``FlexProtAlignmentNMA``) runs for real, in process:
  its own ``convertInputStep`` (modes and particles to Xmipp metadata),
  ``copyDeformationsStep`` (its "copy deformations" input, which replaces the
  ``xmipp_nma_alignment`` binary by a metadata file of known amplitudes) and
  ``createOutputStep``, which sets ``_xmipp_nmaDisplacements`` on each particle
  with ``xmipp3.convert.setXmippAttributes`` (a ``CsvList`` of strings).

Our bridge, landscape, comparison and training protocols then run on these
outputs as subprocesses, as in the GUI, and must give back the known amplitudes
and modes.  Xmipp binaries are not needed; two things of a full Scipion
install are missing from the PyPI packages and are supplied here, only for the
test (see ``cflex``): the Xmipp binding's ``XmippMdRow`` (pyxmipp3 ships the
same class in ``xmipp_script``), and ContinuousFlex's ``protocols/__init__``,
which imports every protocol, some of which need its conda environment
(``sh_alignment``): only the two protocol modules used are imported.

flexutils (scipion-em-flexutils): the protocols that take any
``SetOfParticlesFlex`` must accept our flexible particles in their form
(pointer class, ``_validate``).
"""
import importlib
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

N, BOX, APIX = 36, 32, 3.0
#: HEMNMA amplitudes: three well-separated groups of particles, 3 modes (7, 8, 9)
CENTRES = np.array([[-400.0, 0.0, 100.0], [400.0, 100.0, 0.0], [0.0, -300.0, -400.0]])
MODE_ORDERS = list(range(1, 11))        # vec.1..vec.10 as ContinuousFlex writes them
USED_MODES = [7, 8, 9]                   # vec.10 is disabled (low collectivity)


def _amplitudes():
    rng = np.random.default_rng(11)
    groups = np.arange(N) % 3
    amps = CENTRES[groups] + rng.normal(scale=20.0, size=(N, 3))
    # 2 decimals: Xmipp metadata text keeps 6 significant digits, so these
    # values survive HEMNMA's images.xmd exactly
    return groups, np.array([[float('%.2f' % v) for v in row] for row in amps])


def _launch(proj, prot):
    return scipion_env.launch(proj, prot, info=False)


# ---------------------------------------------------------------------------
# ContinuousFlex classes
# ---------------------------------------------------------------------------


def _continuousflex_reason():
    """Why ContinuousFlex's protocols cannot be used here, or None."""
    for mod in ('continuousflex', 'xmipp3.base', 'xmipp3.convert', 'xmippLib'):
        try:
            importlib.import_module(mod)
        except Exception as exc:
            return ('ContinuousFlex needs %s (scipion-em-continuousflex and '
                    'scipion-em-xmipp, which it imports without declaring it): %s'
                    % (mod, exc))
    import xmipp3.base
    if not hasattr(xmipp3.base, 'XmippMdRow') and \
            importlib.util.find_spec('xmipp_script') is None:
        return ('xmipp3.base.XmippMdRow (from the Xmipp binding) is missing and '
                'pyxmipp3 (xmipp_script) is not installed')
    return None


@pytest.fixture(scope='module')
def cflex():
    """ContinuousFlex's ``FlexProtNMA`` and ``FlexProtAlignmentNMA`` classes."""
    why = _continuousflex_reason()
    if why:
        pytest.skip(why)
    import continuousflex
    import xmipp3
    import xmipp3.base
    mp = pytest.MonkeyPatch()
    if not hasattr(xmipp3.base, 'XmippMdRow'):
        # xmipp3.base does 'from xmipp_base import *' (the binding installed with
        # the Xmipp binaries); pyxmipp3 ships that module's XmippMdRow in xmipp_script
        from xmipp_script import XmippMdRow
        mp.setattr(xmipp3.base, 'XmippMdRow', XmippMdRow, raising=False)
        mp.setattr(xmipp3, 'XmippMdRow', XmippMdRow, raising=False)
    before = set(sys.modules)
    if 'continuousflex.protocols' not in sys.modules:
        # not loaded by Scipion (its __init__ imports every protocol, some need
        # ContinuousFlex's conda environment): the package without its __init__
        pkg = types.ModuleType('continuousflex.protocols')
        pkg.__path__ = [os.path.join(os.path.dirname(continuousflex.__file__), 'protocols')]
        mp.setitem(sys.modules, 'continuousflex.protocols', pkg)
    try:
        nma = importlib.import_module('continuousflex.protocols.protocol_nma')
        ali = importlib.import_module('continuousflex.protocols.protocol_nma_alignment')
        yield types.SimpleNamespace(FlexProtNMA=nma.FlexProtNMA,
                                    FlexProtAlignmentNMA=ali.FlexProtAlignmentNMA)
    finally:
        for name in set(sys.modules) - before:
            if name.startswith('continuousflex.protocols.'):
                del sys.modules[name]
        mp.undo()


@pytest.fixture(scope='module')
def project():
    with scipion_env.new_project('cfgeodl_eco') as proj:
        yield proj


@pytest.fixture(scope='module')
def simulated(project):
    from continuousflex_geodl.protocols import GeoDLProtSimulate
    prot = project.newProtocol(GeoDLProtSimulate, nParticles=N, box=BOX, apix=APIX, snr=1.0,
                               seed=5)
    return _launch(project, prot)


def _finish(project, prot):
    from pyworkflow.protocol import STATUS_FINISHED
    prot.setStatus(STATUS_FINISHED)
    project._storeProtocol(prot)
    return prot


@pytest.fixture(scope='module')
def structure(project, simulated, tmp_path_factory):
    """The simulated reference plus one hetero atom (a bound water), imported
    with Scipion's own import protocol: ContinuousFlex computes modes on the
    ATOM records only."""
    from pwem.protocols import ProtImportPdb
    lines = open(simulated.outputReference.getFileName()).read().splitlines(True)
    end = max(i for i, line in enumerate(lines) if line.startswith('END'))
    water = 'HETATM%5d  O   HOH W   1    %8.3f%8.3f%8.3f  1.00  0.00           O  \n' \
        % (9001, 1.0, 2.0, 3.0)
    fn = str(tmp_path_factory.mktemp('structure') / 'reference_water.pdb')
    with open(fn, 'w') as f:
        f.writelines(lines[:end] + [water] + lines[end:])
    prot = project.newProtocol(ProtImportPdb, inputPdbData=1, pdbFile=fn, skipChimera=True)
    return _launch(project, prot)


@pytest.fixture(scope='module')
def nma(project, structure, cflex):
    """ContinuousFlex NMA run on the simulated reference: its own ``copyPdbStep``,
    the files its ElNemo/Xmipp steps write (modes/vec.N, modes.xmd as in
    ``qualifyModesStep``), then its own ``createOutputStep``.
    Returns (protocol, atom positions, {order: mode})."""
    from pwem import emlib
    from continuousflex_geodl import convert
    prot = project.newProtocol(cflex.FlexProtNMA)
    prot.inputStructure.set(structure)
    prot.inputStructure.setExtended('outputPdb')
    project.saveProtocol(prot)
    prot.makeWorkingDir()
    # its first step (pure Python): the structure copied, ATOM lines only, and
    # linked as atoms.pdb, the structure its modes are computed on
    inputFn = structure.outputPdb.getFileName()
    prot.copyPdbStep(inputFn, prot._getPath(os.path.basename(inputFn)), False)
    pos = convert.readPdbCoordinates(prot._getPath('atoms.pdb'))
    assert len(convert.readPdbCoordinates(inputFn)) == len(pos) + 1   # the water
    os.makedirs(prot._getPath('modes'))
    rng = np.random.default_rng(7)
    centre = pos.mean(0)
    vecs = {}
    md = emlib.MetaData()
    for n in MODE_ORDERS:
        if n <= 6:   # rigid-body modes: translations and rotations
            v = np.zeros_like(pos)
            if n <= 3:
                v[:, n - 1] = 1.0
            else:
                v = np.cross(np.eye(3)[n - 4], pos - centre)
        else:        # smooth deformations
            a, b = rng.normal(size=(3, 3)), rng.normal(size=3)
            v = np.sin((pos - centre) @ a / 20.0 + b)
        vecs[n] = v / np.sqrt((v ** 2).sum() / len(v))
        fn = prot._getPath('modes', 'vec.%d' % n)
        np.savetxt(fn, vecs[n], fmt='%14.6E')   # ElNemo's fixed-width E format
        objId = md.addObject()
        md.setValue(emlib.MDL_NMA_MODEFILE, fn, objId)
        md.setValue(emlib.MDL_ORDER, int(n), objId)
        md.setValue(emlib.MDL_ENABLED, 1 if n in USED_MODES else -1, objId)
        md.setValue(emlib.MDL_NMA_COLLECTIVITY, 0.5 if n != 10 else 0.01, objId)
        md.setValue(emlib.MDL_NMA_SCORE, float(n) / 20.0, objId)
    md.write(prot._getPath('modes.xmd'))
    prot.createOutputStep()          # ContinuousFlex's own
    return _finish(project, prot), pos, vecs


@pytest.fixture(scope='module')
def hemnma(project, simulated, nma, cflex, tmp_path_factory):
    """ContinuousFlex HEMNMA (nma alignment) run for real in this process, with
    its 'copy deformations' input of known amplitudes instead of the Xmipp
    alignment binary.  Returns (protocol, groups, amplitudes)."""
    from pwem import emlib
    from xmipp3.convert import writeSetOfParticles
    groups, amps = _amplitudes()
    parts = simulated.outputParticles
    # the metadata xmipp_nma_alignment writes: the particles' rows (poses
    # included) + nmaDisplacements and cost, one row per image
    fn = str(tmp_path_factory.mktemp('hemnma') / 'deformations.xmd')
    writeSetOfParticles(parts, fn)
    md = emlib.MetaData(fn)
    for k, objId in enumerate(md):
        md.setValue(emlib.MDL_NMA, [float(v) for v in amps[k]], objId)
        md.setValue(emlib.MDL_COST, float(k), objId)
    md.write(fn)
    prot = project.newProtocol(cflex.FlexProtAlignmentNMA, modeList='7-9', copyDeformations=fn)
    prot.inputModes.set(nma[0])
    prot.inputModes.setExtended('outputModes')
    prot.inputParticles.set(simulated)
    prot.inputParticles.setExtended('outputParticles')
    project.saveProtocol(prot)
    prot.makePathsAndClean()         # as Project.launchProtocol does
    # its steps, in this process, as pyworkflow's runProtocolMain runs them
    from pyworkflow.protocol.executor import StepExecutor
    prot.setStepsExecutor(StepExecutor(prot.getHostConfig()))
    prot.run()
    assert prot.isFinished(), prot.getErrorMessage()
    # ContinuousFlex maps metadata rows to particles by stack index = particle id
    assert all(p.getIndex() == p.getObjId() for p in parts.iterItems())
    # its convertInputStep wrote the selected modes of the SetOfNormalModes
    assert emlib.MetaData(prot._getExtraPath('modes.xmd')).size() == len(USED_MODES)
    return prot, groups, amps


def test_continuousflex_outputs_are_what_its_protocols_write(nma, hemnma):
    """The objects under test are ContinuousFlex's: a SetOfNormalModes with its
    structure, and particles whose amplitudes are a CsvList of str."""
    from pwem.objects import SetOfNormalModes
    from pyworkflow.object import CsvList
    from continuousflex_geodl import constants as const, convert
    modes = nma[0].outputModes
    assert isinstance(modes, SetOfNormalModes) and modes.getSize() == len(MODE_ORDERS)
    assert modes.getPdb().getFileName() == nma[0].inputStructure.get().getFileName()
    assert convert.modesStructureFile(modes) == nma[0]._getPath('atoms.pdb')
    enabled = [m.getObjId() for m in modes.iterItems(orderBy='id') if m.isEnabled()]
    assert enabled == USED_MODES
    prot, _, amps = hemnma
    parts = prot.outputParticles
    assert parts.getSize() == N and parts.hasAlignmentProj()
    for k, p in enumerate(parts.iterItems(orderBy='id')):
        value = getattr(p, const.ATTR_HEMNMA)
        assert isinstance(value, CsvList)
        assert all(isinstance(v, str) for v in value)      # CsvList(pType=str)
        np.testing.assert_array_equal(np.array(value, dtype=float), amps[k])


def test_bridge_reads_hemnma_attribute_and_metadata(project, hemnma):
    """HEMNMA particles -> flexible particles (attribute, and ContinuousFlex's
    images.xmd): zFlex = the amplitudes, exactly, particle by particle."""
    from pwem.objects import SetOfParticlesFlex
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import GeoDLProtHemnmaToFlex
    prot, _, amps = hemnma
    xmd = os.path.abspath(prot._getExtraPath('images.xmd'))
    assert os.path.exists(xmd)
    for source, extra in ((0, {}), (2, {'xmdFile': xmd})):
        bridge = project.newProtocol(GeoDLProtHemnmaToFlex, source=source, **extra)
        bridge.inputParticles.set(prot)
        bridge.inputParticles.setExtended('outputParticles')
        _launch(project, bridge)
        out = bridge.outputParticles
        assert isinstance(out, SetOfParticlesFlex) and out.getSize() == N
        assert out.getFlexInfo().getProgName() == const.PROG_NAME
        assert int(out.getFlexInfo().getAttr(const.FLEX_ZDIM)) == 3
        for k, p in enumerate(out.iterItems(orderBy='id')):
            assert p.getObjId() == k + 1
            np.testing.assert_allclose(p.getZFlex(), amps[k], rtol=1e-12)


def _bridge(project, hemnma):
    from continuousflex_geodl.protocols import GeoDLProtHemnmaToFlex
    bridge = project.newProtocol(GeoDLProtHemnmaToFlex, source=0)
    bridge.inputParticles.set(hemnma[0])
    bridge.inputParticles.setExtended('outputParticles')
    return _launch(project, bridge)


def _partition_matches(a, b):
    pairs = set(zip(a, b))
    return len(pairs) == len(set(a)) == len(set(b))


def test_landscape_and_comparison_on_hemnma_amplitudes(project, hemnma):
    """Landscape of the HEMNMA amplitudes: the three groups are its three
    states; comparison of the amplitudes with their bridged copy: identical."""
    import json
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import GeoDLProtCompareLandscapes, GeoDLProtLandscape
    prot, groups, amps = hemnma
    land = project.newProtocol(GeoDLProtLandscape, source=const.SOURCE_HEMNMA, nStates='3',
                               stateMethod=1, bootstrap=2, feBootstrap=2)
    land.inputParticles.set(prot)
    land.inputParticles.setExtended('outputParticles')
    _launch(project, land)
    found = []
    for k, p in enumerate(land.outputParticles.iterItems(orderBy='id')):
        # the landscape works on (and stores) float32 coordinates
        np.testing.assert_allclose(p.getZFlex(), amps[k], rtol=1e-6)
        found.append(int(getattr(p, const.ATTR_STATE).get()))
    assert _partition_matches(found, list(groups)), (found, list(groups))

    bridge = _bridge(project, hemnma)
    cmp_ = project.newProtocol(GeoDLProtCompareLandscapes, sourceA=const.SOURCE_HEMNMA,
                               sourceB=const.SOURCE_ZFLEX, k=5)
    cmp_.inputA.set(prot)
    cmp_.inputA.setExtended('outputParticles')
    cmp_.inputB.set(bridge)
    cmp_.inputB.setExtended('outputParticles')
    _launch(project, cmp_)
    with open(cmp_._getExtraPath('agreement.json')) as f:
        res = json.load(f)
    assert res['agreement']['n_particles'] == N
    assert res['agreement']['spearman_a_predicts_b'] == pytest.approx([1.0] * 3)


def test_training_uses_continuousflex_normal_modes(project, simulated, structure, nma):
    """Training on ContinuousFlex's SetOfNormalModes: the modes file handed to
    the core holds the structure the modes were computed on (ATOM records, not
    the water) and exactly the enabled non-rigid modes, in order; the trained
    decoder has that many modes."""
    from continuousflex_geodl.protocols import GeoDLProtTrain
    nmaProt, pos, vecs = nma
    prot = project.newProtocol(GeoDLProtTrain, zdim=2, epochs=1, batchSize=12,
                               numberOfThreads=1)
    prot.inputParticles.set(simulated)
    prot.inputParticles.setExtended('outputParticles')
    prot.inputReference.set(structure)
    prot.inputReference.setExtended('outputPdb')
    prot.inputModes.set(nmaProt)
    prot.inputModes.setExtended('outputModes')
    _launch(project, prot)
    with np.load(prot._getModesFile()) as d:
        np.testing.assert_allclose(d['positions'], pos, atol=1e-3)
        expected = np.stack([vecs[n] for n in USED_MODES], axis=-1)
        np.testing.assert_allclose(d['modes'], expected, rtol=1e-5, atol=1e-5)
    cfg = prot.outputModel.loadConfig()
    flat = dict(cfg, **cfg.get('settings', {}), **cfg.get('model', {}))
    assert flat.get('decoder') == 'nma' and int(flat.get('nma_modes')) == len(USED_MODES), cfg


# ---------------------------------------------------------------------------
# flexutils protocols on our flexible particles (ContinuousFlex not needed)
# ---------------------------------------------------------------------------

#: flexutils protocols that take any SetOfParticlesFlex, and the param holding it
#: (flexutils/protocols/protocol_dimred.py 'particles', protocol_find_optimal_clusters.py
#: 'inputParticles', protocol_filter_pca.py 'particles', protocol_score_landscape.py
#: 'inputParticles', protocol_associate_flex_space_to_particles.py 'particlesFlex').
FLEXUTILS_PROTOCOLS = [('ProtFlexDimRedSpace', 'particles'),
                       ('ProtFlexOptimalClusters', 'inputParticles'),
                       ('ProtFlexFilterPCA', 'particles'),
                       ('ProtFlexScoreLandscape', 'inputParticles'),
                       ('ProtFlexAssociateSpace', 'particlesFlex')]


@pytest.fixture(scope='module')
def flexParticles(project, simulated, tmp_path_factory):
    """Our SetOfParticlesFlex with 3 latent dimensions: the bridge on an Xmipp
    metadata of known vectors (matched by itemId)."""
    from pwem import emlib
    from continuousflex_geodl.protocols import GeoDLProtHemnmaToFlex
    _, amps = _amplitudes()
    fn = str(tmp_path_factory.mktemp('flexutils') / 'latents.xmd')
    md = emlib.MetaData()
    for k, p in enumerate(simulated.outputParticles.iterItems(orderBy='id')):
        objId = md.addObject()
        md.setValue(emlib.MDL_ITEM_ID, int(p.getObjId()), objId)
        md.setValue(emlib.MDL_NMA, [float(v) for v in amps[k]], objId)
    md.write(fn)
    prot = project.newProtocol(GeoDLProtHemnmaToFlex, source=2, xmdFile=fn)
    prot.inputParticles.set(simulated)
    prot.inputParticles.setExtended('outputParticles')
    return _launch(project, prot), amps


def test_flexible_particles_carry_what_flexutils_reads(flexParticles):
    """What flexutils' generic protocols read (its source, 3.4.0): zFlex on every
    particle (protocol_dimred.py / protocol_filter_pca.py ``_validate``:
    ``len(particles.getFirstItem().getZFlex())`` >= the reduced dimension,
    default 3; their steps and protocol_find_optimal_clusters.py,
    protocol_score_landscape.py: ``particle.getZFlex()`` of each particle), and
    the set's ``getFlexInfo().getProgName()``, which they copy to their outputs
    (``_createSetOfParticlesFlex(progName=...)``)."""
    from pwem.objects import ParticleFlex, SetOfParticlesFlex
    from continuousflex_geodl import constants as const
    prot, amps = flexParticles
    out = prot.outputParticles
    assert isinstance(out, SetOfParticlesFlex)
    assert out.getFlexInfo().getProgName() == const.PROG_NAME
    assert isinstance(out.getFirstItem(), ParticleFlex)
    z = np.array([p.getZFlex() for p in out.iterItems(orderBy='id')])
    np.testing.assert_allclose(z, amps, rtol=1e-12)


def test_flexutils_generic_protocols_accept_our_particles(project, simulated, flexParticles):
    """flexutils' protocols built in the project on our particles: the form's
    pointer class accepts them (and refuses plain particles), ``_validate`` is
    empty, and ``validate`` reports nothing beyond flexutils' own installation."""
    pytest.importorskip('flexutils', reason='scipion-em-flexutils is not installed')
    from pwem import Domain
    from continuousflex_geodl import constants as const
    from continuousflex_geodl.protocols import GeoDLProtHemnmaToFlex
    flex = flexParticles[0]
    registered = Domain.getProtocols()
    for clsName, param in FLEXUTILS_PROTOCOLS:
        assert clsName in registered, clsName
        prot = project.newProtocol(registered[clsName])
        pointer = getattr(prot, param)
        pointer.set(flex)
        pointer.setExtended('outputParticles')
        if clsName == 'ProtFlexAssociateSpace':
            prot.particles.set(simulated)
            prot.particles.setExtended('outputParticles')
        # pointer class, as the form's object browser filters it
        pclass = prot.getDefinition().getParam(param).pointerClass.get()
        classes = [Domain.findClass(c.strip()) for c in pclass.split(',')]
        assert any(isinstance(pointer.get(), c) for c in classes), (clsName, pclass)
        assert not any(isinstance(simulated.outputParticles, c) for c in classes)
        assert prot._validate() in ([], None), clsName
        install = prot.validateInstallation() or []
        assert [e for e in prot.validate() if e not in install] == [], clsName
    # the check bites: a landscape of fewer than 3 dimensions cannot be reduced
    # to flexutils' (at least) 3
    flat = project.newProtocol(GeoDLProtHemnmaToFlex, source=1, attrName=const.ATTR_GT_COORD)
    flat.inputParticles.set(simulated)
    flat.inputParticles.setExtended('outputParticles')
    _launch(project, flat)
    assert len(flat.outputParticles.getFirstItem().getZFlex()) < 3   # the simulated motion
    dimred = project.newProtocol(registered['ProtFlexDimRedSpace'])
    dimred.particles.set(flat)
    dimred.particles.setExtended('outputParticles')
    assert any('original dimensions' in e for e in dimred._validate())

"""The plugin as Scipion sees it: protocols, viewers, objects, citations, tree.

A failing import inside ``protocols/`` or ``viewers/`` is silent in Scipion
(the plugin just shows nothing), so every module there is imported
explicitly and every class it defines must be registered by the Domain.
"""
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

import pytest

from continuousflex_geodl.tests import scipion_env

scipion_env.configure()
_SKIP = scipion_env.skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or '')

PKG = 'continuousflex_geodl'
PKG_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _modules(subpackage):
    path = os.path.join(PKG_DIR, subpackage)
    return sorted(m.name for m in pkgutil.iter_modules([path]))


def _classes_defined(subpackage, base):
    """{name: class} of ``base`` subclasses defined in the sub-package's modules."""
    found = {}
    for name in _modules(subpackage):
        mod = importlib.import_module('%s.%s.%s' % (PKG, subpackage, name))
        for cname, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, base):
                found[cname] = cls
    return found


def _our_final_protocols():
    from pyworkflow.protocol import Protocol
    return {k: v for k, v in _classes_defined('protocols', Protocol).items()
            if not v.isBase()}


def test_plugin_is_registered_with_its_variables():
    from pwem import Domain
    plugins = Domain.getPlugins()
    assert PKG in plugins, 'entry point pyworkflow.plugin -> continuousflex_geodl missing'
    mod = plugins[PKG]
    plugin = mod._pluginInstance
    assert plugin.getName() == PKG
    assert os.path.samefile(plugin.getPath(), PKG_DIR)
    from continuousflex_geodl import Plugin, constants as const
    for var in (const.CFGEODL_DEVICE, const.CFGEODL_KEOPS_CACHE, const.CFGEODL_PYTHON):
        assert Plugin.getVar(var), var
    env = Plugin.getEnviron(threads=3, gpus=[1, 2])
    assert env['KEOPS_CACHE_FOLDER'] == Plugin.getKeopsCacheFolder()
    assert env['OMP_NUM_THREADS'] == '3' and env['CUDA_VISIBLE_DEVICES'] == '1,2'
    assert Plugin.validateInstallation() == []
    logo = os.path.join(PKG_DIR, mod._logo)
    assert os.path.exists(logo), logo


def test_every_protocol_module_imports_and_registers():
    from pwem import Domain
    import continuousflex_geodl.protocols as prots
    modules = [m for m in _modules('protocols') if m.startswith('protocol_')]
    assert sorted(set(modules) - {'protocol_base'}) == sorted(prots.PROTOCOL_MODULES)
    ours = _our_final_protocols()
    registered = Domain.getProtocols()
    missing = sorted(set(ours) - set(registered))
    assert not missing, 'protocols not registered by Scipion: %s' % missing
    for name, cls in ours.items():
        assert registered[name] is cls
        assert registered[name]._package.__name__ == PKG
        assert getattr(prots, name) is cls, '%s not exported by protocols/__init__' % name
    assert len(ours) >= 3
    assert {'GeoDLProtSimulate', 'GeoDLProtTrain', 'GeoDLProtPredict'} <= set(ours)


def test_every_viewer_module_imports_and_registers():
    from pwem import Domain
    from pyworkflow.viewer import Viewer
    ours = _classes_defined('viewers', Viewer)
    registered = Domain.getViewers()
    missing = sorted(set(ours) - set(registered))
    assert not missing, 'viewers not registered by Scipion: %s' % missing
    for name, cls in ours.items():
        assert registered[name] is cls
        assert cls._targets, '%s has no _targets' % name


def test_objects_are_registered_and_persist(tmp_path):
    from pwem import Domain
    from pyworkflow.mapper import SqliteMapper
    from continuousflex_geodl.objects import GeoDLModel
    assert Domain.getObjects().get('GeoDLModel') is GeoDLModel
    fn = str(tmp_path / 'obj.sqlite')
    mapper = SqliteMapper(fn, Domain.getMapperDict())
    m = GeoDLModel(modelDir='/data/model', zdim=8, box=64, apix=2.0, prior='gmm', nAtoms=300)
    mapper.insert(m)
    mapper.commit()
    back = SqliteMapper(fn, Domain.getMapperDict()).selectByClass('GeoDLModel')[0]
    assert (back.getModelDir(), back.getZdim(), back.getBox(), back.getSamplingRate(),
            back.getPrior(), back.getNumberOfAtoms()) == ('/data/model', 8, 64, 2.0, 'gmm', 300)


def test_citations_resolve_to_bibtex():
    import pyworkflow.utils as pwutils
    import continuousflex_geodl
    from continuousflex_geodl import bibtex
    bib = pwutils.parseBibTex(bibtex.__doc__)
    for key in ('Zhong2021cryodrgn', 'cryoTWIN', 'Gupta2020multicryogan', 'Feydy2019geomloss',
                'Charlier2021keops', 'Sverrisson2021dmasif', 'Jin2014hemnma',
                'Hamitouche2022deephemnma', 'Harastani2022continuousflex',
                'delaRosaTrevin2016scipion'):
        assert key in bib and bib[key].get('title'), key
    for key in continuousflex_geodl._references:
        assert key in bib, key
    for name, cls in _our_final_protocols().items():
        prot = cls()
        for key in prot._citations():
            assert key in bib, '%s cites unknown %s' % (name, key)


def test_protocol_forms_have_help_for_every_param():
    for name, cls in _our_final_protocols().items():
        prot = cls()
        params = list(prot.getDefinition().iterAllParams())
        assert len(params) > 4, name
        for pname, param in params:
            assert param.help.get(), '%s.%s has no help text' % (name, pname)
        assert cls.__doc__ and len(cls.__doc__.strip()) > 40, '%s has no description' % name
        assert prot._label


def test_protocols_conf_places_every_protocol_in_the_tree():
    from pwem import Domain
    from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig
    import pwem
    base = os.path.join(os.path.dirname(pwem.__file__), 'protocols.conf')
    tree = ProtocolTreeConfig.load(Domain, base)

    def values(node):
        out = set()
        for child in node.childs:
            if child.value:
                out.add(child.value)
            out |= values(child)
        return out

    ours = set(_our_final_protocols())
    spa = values(tree['Protocols SPA'])
    assert ours <= spa, 'missing in Protocols SPA: %s' % sorted(ours - spa)
    view = values(tree['Geometric deep learning'])
    assert ours <= view, 'missing in the GeoDL view: %s' % sorted(ours - view)


def test_no_heavy_imports_in_scipion_modules_and_no_scipion_in_core():
    """Every Scipion process imports our protocols: torch/pykeops/geomloss stay out;
    the core and its CLI never import pyworkflow."""
    env = dict(os.environ)
    mods = ['protocols', 'viewers', 'objects', 'convert', 'constants', 'bibtex']
    if os.path.exists(os.path.join(PKG_DIR, 'wizards.py')):
        mods.append('wizards')
    code_gui = ('import sys\n'
                + ''.join('import %s.%s\n' % (PKG, m) for m in mods)
                + 'from continuousflex_geodl import Plugin\n'
                'bad = [m for m in ("torch", "pykeops", "geomloss", "ot") if m in sys.modules]\n'
                'assert not bad, bad\n')
    r = subprocess.run([sys.executable, '-c', code_gui], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    code_core = ('import sys, continuousflex_geodl, continuousflex_geodl.core.cli as c\n'
                 'c.build_parser()\n'
                 'bad = [m for m in ("pyworkflow", "pwem") if m in sys.modules]\n'
                 'assert not bad, bad\n')
    r = subprocess.run([sys.executable, '-c', code_core], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]

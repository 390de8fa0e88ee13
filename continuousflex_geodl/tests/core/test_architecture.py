"""The package's architecture, checked from its source (no Scipion needed,
except for the import-time check of the Scipion layer).

Every ``import`` / ``from ... import`` statement of every module is read with
:mod:`ast`, wherever it stands (module top, functions, methods, ``try``
blocks), relative and absolute, and turned into module -> module edges.  On
that graph:

* there is no import cycle among the package's modules;
* the core (``continuousflex_geodl.core``) never imports Scipion
  (pyworkflow, pwem, ...) nor a module of the package outside the core
  (protocols, viewers, convert, plugin, objects, constants, the package
  ``__init__``); ``continuousflex_geodl._version`` is its only way out;
* ``core.io`` never reaches the model or training code, and
  ``core.landscape`` never reaches the training engine, directly or through
  other modules;
* no ``os.replace`` outside ``core/fileio.py`` in the repository;
* the Scipion layer (protocols, viewers) loads no torch / pykeops / geomloss
  when imported (checked in a fresh interpreter).

``.importlinter`` (repository root) states the same contracts for
import-linter; :func:`test_import_linter_contracts` runs ``lint-imports``.
The AST checks here are the authoritative ones: they also see the imports
inside functions.
"""
import ast
import os
import shutil
import subprocess
import sys

import pytest

PKG = 'continuousflex_geodl'
PKG_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(PKG_DIR)

#: Scipion and its plugins / libraries (the Xmipp *bindings*, ``xmippLib`` from
#: pyxmipp3, are a stand-alone optional format reader and stay allowed)
SCIPION_ROOTS = ('pyworkflow', 'pwem', 'pwchem', 'scipion', 'xmipp3', 'continuousflex',
                 'tomo', 'emtable')
#: the only modules outside the core the core may import
CORE_MAY_IMPORT = (PKG + '.core', PKG + '._version')
HEAVY = ('torch', 'pykeops', 'geomloss')


# ---- the import graph ----------------------------------------------------------
def package_modules(pkg_dir=PKG_DIR, pkg=PKG):
    """{dotted module name: path} of every ``.py`` file of the package."""
    modules = {}
    for root, dirs, files in os.walk(pkg_dir):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        rel = os.path.relpath(root, pkg_dir)
        parts = [pkg] + ([] if rel == '.' else rel.split(os.sep))
        for f in sorted(files):
            if not f.endswith('.py'):
                continue
            name = '.'.join(parts if f == '__init__.py' else parts + [f[:-3]])
            modules[name] = os.path.join(root, f)
    return modules


def _resolve_relative(module, is_package, level, target):
    base = module.split('.') if is_package else module.split('.')[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return '.'.join(base + ([target] if target else []))


def imports_of(module, path, modules):
    """[(imported dotted name, line)] of every import statement in ``path``.

    ``from X import Y`` counts as an import of ``X.Y`` when that is a module,
    else of ``X``; ``import a.b.c`` as an import of ``a.b.c``.
    """
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = os.path.basename(path) == '__init__.py'
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module)
                    if node.level else node.module)
            for alias in node.names:
                sub = base + '.' + alias.name
                found.append((sub if sub in modules else base, node.lineno))
    return found


def import_graph(modules=None):
    """{module: {imported package module: first line}} restricted to the
    package, and {module: [(external top-level name, line)]}."""
    modules = package_modules() if modules is None else modules
    internal, external = {}, {}
    for mod, path in modules.items():
        edges, ext = {}, []
        for name, line in imports_of(mod, path, modules):
            if name == PKG or name.startswith(PKG + '.'):
                # the deepest package module the name lies in
                while name not in modules and '.' in name:
                    name = name.rsplit('.', 1)[0]
                if name != mod:
                    edges.setdefault(name, line)
            else:
                ext.append((name.split('.')[0], line))
        internal[mod], external[mod] = edges, ext
    return internal, external


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if color[start] != WHITE:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        color[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
                path.pop()
            elif color.get(nxt, BLACK) == GREY:
                return path[path.index(nxt):] + [nxt]
            elif color.get(nxt) == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def reach_path(graph, start, is_target):
    """Shortest import chain from ``start`` to a module where ``is_target`` holds
    (a list of modules), or None."""
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for node in frontier:
            for dep in sorted(graph.get(node, ())):
                if dep in prev:
                    continue
                prev[dep] = node
                if is_target(dep):
                    chain = [dep]
                    while prev[chain[-1]] is not None:
                        chain.append(prev[chain[-1]])
                    return chain[::-1]
                nxt.append(dep)
        frontier = nxt
    return None


def with_parent_packages(graph):
    """``graph`` plus, for every module, an edge to each package above it:
    importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first (for
    what a module reaches at run time; not for cycles, which these edges
    would make of every package that imports its own modules)."""
    out = {m: dict(edges) for m, edges in graph.items()}
    for mod in graph:
        parts = mod.split('.')
        for i in range(1, len(parts)):
            parent = '.'.join(parts[:i])
            if parent in graph:
                out[mod].setdefault(parent, 0)
    return out


def _in(name, *prefixes):
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def _describe(graph, chain):
    def step(a, b):
        line = graph[a][b]
        return '%s (%s)' % (a, 'line %d' % line if line else 'package of')
    return ' -> '.join(step(a, b) for a, b in zip(chain, chain[1:])) + ' -> ' + chain[-1]


@pytest.fixture(scope='module')
def graph():
    return import_graph()


# ---- the graph reader itself ---------------------------------------------------
def test_graph_reader_sees_every_kind_of_import(tmp_path):
    """Round trip on a generated package: top-level, in-function, relative
    (one and two levels), ``from pkg import submodule`` and a cycle hidden in a
    function are all read."""
    pkg = tmp_path / 'toypkg'
    (pkg / 'sub').mkdir(parents=True)
    (pkg / '__init__.py').write_text('__version__ = "1"\n')
    (pkg / 'a.py').write_text('import os\nfrom . import b\n')
    (pkg / 'b.py').write_text('def f():\n    from .sub import c\n    return c\n')
    (pkg / 'sub' / '__init__.py').write_text('')
    (pkg / 'sub' / 'c.py').write_text('import toypkg.d\nfrom .. import __version__\n')
    (pkg / 'd.py').write_text('class K:\n    def m(self):\n        import numpy\n'
                              '        from toypkg import a\n')
    modules = package_modules(str(pkg), 'toypkg')
    assert set(modules) == {'toypkg', 'toypkg.a', 'toypkg.b', 'toypkg.sub',
                            'toypkg.sub.c', 'toypkg.d'}
    found = {m: sorted(n for n, _ in imports_of(m, p, modules)) for m, p in modules.items()}
    assert found['toypkg.a'] == ['os', 'toypkg.b']
    assert found['toypkg.b'] == ['toypkg.sub.c']
    assert found['toypkg.sub.c'] == ['toypkg', 'toypkg.d']
    assert found['toypkg.d'] == ['numpy', 'toypkg.a']
    edges = {m: {n for n, _ in imports_of(m, p, modules) if n.startswith('toypkg')}
             for m, p in modules.items()}
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {'toypkg.a', 'toypkg.b', 'toypkg.sub.c', 'toypkg.d'}
    edges['toypkg.d'].discard('toypkg.a')
    assert find_cycle(edges) is None
    assert reach_path(edges, 'toypkg.a', lambda m: m == 'toypkg.d') == \
        ['toypkg.a', 'toypkg.b', 'toypkg.sub.c', 'toypkg.d']
    assert reach_path(edges, 'toypkg.d', lambda m: m == 'toypkg.a') is None
    # importing toypkg.sub.c runs toypkg/sub/__init__ first
    (pkg / 'sub' / '__init__.py').write_text('from .. import a\n')
    modules = package_modules(str(pkg), 'toypkg')
    edges = {m: {n: line for n, line in imports_of(m, p, modules) if n.startswith('toypkg')}
             for m, p in modules.items()}
    edges['toypkg.d'].pop('toypkg.a')
    edges['toypkg.b'] = {}
    (pkg / 'e.py').write_text('import os\ntry:\n    import torch\nexcept ImportError:\n'
                              '    torch = None\nclass A:\n    from numpy import pi\n'
                              '    def f(self):\n        import pykeops\n'
                              'def g():\n    import geomloss\n')
    assert sorted(import_time_imports(str(pkg / 'e.py'))) == [('numpy', 7), ('os', 1),
                                                             ('torch', 3)]
    assert reach_path(edges, 'toypkg.sub.c', lambda m: m == 'toypkg.a') is None
    assert reach_path(with_parent_packages(edges), 'toypkg.sub.c',
                      lambda m: m == 'toypkg.a') == ['toypkg.sub.c', 'toypkg.sub', 'toypkg.a']


# ---- the contracts -------------------------------------------------------------
def test_no_import_cycles(graph):
    internal, _ = graph
    cycle = find_cycle(internal)
    assert cycle is None, 'import cycle: ' + _describe(internal, cycle)


def test_core_never_imports_scipion(graph):
    _, external = graph
    bad = ['%s line %d: %s' % (mod, line, name)
           for mod, ext in sorted(external.items()) if _in(mod, PKG + '.core')
           for name, line in ext if name in SCIPION_ROOTS]
    assert not bad, 'the core imports Scipion:\n' + '\n'.join(bad)


def test_core_never_imports_the_scipion_layer(graph):
    internal, _ = graph
    bad = ['%s line %d: %s' % (mod, line, dep)
           for mod, edges in sorted(internal.items()) if _in(mod, PKG + '.core')
           for dep, line in sorted(edges.items()) if not _in(dep, *CORE_MAY_IMPORT)]
    assert not bad, 'the core imports modules outside the core:\n' + '\n'.join(bad)


@pytest.mark.parametrize('layer, forbidden, what', [
    ('core.io', ('core.models', 'core.training', 'core.engine', 'core.losses',
                 'core.inference'), 'the model / training code'),
    ('core.landscape', ('core.training', 'core.engine'), 'the training engine'),
])
def test_layer_never_reaches(graph, layer, forbidden, what):
    """Directly or through other modules of the package (and the packages'
    ``__init__`` that importing them runs)."""
    internal = with_parent_packages(graph[0])
    layer = PKG + '.' + layer
    forbidden = tuple(PKG + '.' + f for f in forbidden)
    assert any(_in(m, layer) for m in internal)
    bad = []
    for mod in sorted(m for m in internal if _in(m, layer)):
        chain = reach_path(internal, mod, lambda m: _in(m, *forbidden))
        if chain:
            bad.append(_describe(internal, chain))
    assert not bad, '%s reaches %s:\n%s' % (layer, what, '\n'.join(bad))


def _source_files():
    """The repository's Python files: those git tracks or would add (not the
    ignored ones: virtual environments, benchmark work folders)."""
    try:
        out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '--', '*.py'],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return [os.path.join(REPO, p) for p in out.stdout.splitlines()
                if os.path.isfile(os.path.join(REPO, p))]
    files = []
    for top in (PKG_DIR, os.path.join(REPO, 'benchmarks')):
        for root, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if d not in ('__pycache__', 'work')]
            files.extend(os.path.join(root, f) for f in names if f.endswith('.py'))
    return files


def _calls_os_replace(path):
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == 'replace' \
                and isinstance(node.value, ast.Name) and node.value.id == 'os':
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == 'os' \
                and any(a.name == 'replace' for a in node.names):
            lines.append(node.lineno)
    return lines


def test_os_replace_only_in_fileio():
    """Atomic writes go through ``core.fileio`` (temporary file in the same
    folder, fsync, ``os.replace``), nowhere else in the repository."""
    fileio = os.path.join(PKG_DIR, 'core', 'fileio.py')
    assert _calls_os_replace(fileio), 'core/fileio.py no longer uses os.replace?'
    this = os.path.abspath(__file__)
    bad = ['%s:%d' % (os.path.relpath(p, REPO), line)
           for p in sorted(_source_files()) if p not in (fileio, this)
           for line in _calls_os_replace(p)]
    assert not bad, 'os.replace outside core/fileio.py:\n' + '\n'.join(bad)


def import_time_imports(path):
    """[(top-level name, line)] of the imports that run when the module is
    imported: module top, ``if`` / ``try`` blocks, class bodies; not function
    bodies."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), filename=path)
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            found.extend((a.name.split('.')[0], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.module.split('.')[0], node.lineno))
        else:
            todo.extend(ast.iter_child_nodes(node))
    return found


def test_scipion_modules_have_no_heavy_import_at_module_top():
    modules = package_modules()
    scipion = [m for m in modules if _in(m, *('%s.%s' % (PKG, s) for s in (
        'protocols', 'viewers', 'objects', 'convert', 'plugin', 'constants', 'workflow')))]
    assert len(scipion) > 10
    bad = ['%s line %d: %s' % (m, line, name) for m in sorted(scipion)
           for name, line in import_time_imports(modules[m]) if name in HEAVY]
    assert not bad, 'heavy imports at module top of the Scipion layer:\n' + '\n'.join(bad)


def test_scipion_layer_imports_no_heavy_library():
    """Importing the protocols and viewers (what Scipion does to list them)
    loads none of torch / pykeops / geomloss."""
    pytest.importorskip('pyworkflow')
    pytest.importorskip('pwem')
    code = ('import sys\n'
            'import {0}.protocols, {0}.viewers, {0}.objects, {0}.convert, {0}.plugin\n'
            'print(",".join(m for m in {1!r} if m in sys.modules))\n').format(PKG, HEAVY)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ''
    assert loaded == '', 'importing the Scipion layer loads: ' + loaded


def test_import_linter_contracts():
    """``lint-imports`` with the contracts of ``.importlinter``."""
    exe = shutil.which('lint-imports') or os.path.join(os.path.dirname(sys.executable),
                                                        'lint-imports')
    if not os.path.exists(exe):
        pytest.skip('import-linter is not installed (pip install import-linter, '
                    'or the "test" extra); the AST checks above cover the same contracts')
    assert os.path.exists(os.path.join(REPO, '.importlinter'))
    res = subprocess.run([exe, '--no-cache'], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]

"""The whole chain as Scipion protocols, in a headless Scipion project.

``python -m continuousflex_geodl.workflow --out DIR`` (what ``continuousflex-geodl
demo --scipion`` runs) creates a fresh Scipion project inside ``DIR`` and runs,
as the GUI would (each protocol in its own process, through ``SCIPION_PYTHON``):

    simulate particles -> train -> predict latents -> landscape (free energy,
    states and their maps) -> structures along the minimum free-energy pathway
    between two states (along PC1 when there is only one state) -> animation

then runs the viewers to write the figures, the pathway GIF, the ChimeraX
script and the multi-model PDB into ``DIR/results`` and prints where
everything is.  Options: ``--n-particles 2000 --epochs E --seed 0 --device
cpu --project NAME``.  With the default settings it finishes well within 15
minutes on 2 CPU cores: training runs the train default of 30 epochs (about
2-3 minutes for 2,000 particles of 64 px), stopping earlier when the next
epoch would pass a 9-minute budget (``--time-limit``, minutes; 0 = none;
not applied when ``--epochs`` is given).

Open the project afterwards in the Scipion GUI with::

    python -m continuousflex_geodl.workflow --open --out DIR

Batch use through the project API (what this module does; any protocol
parameter can be set by name, as in the GUI form)::

    from continuousflex_geodl.workflow import setup_environment
    setup_environment('my_folder')          # before importing pyworkflow / pwem
    from pyworkflow.project import Manager
    from continuousflex_geodl import protocols as P

    proj = Manager().createProject('my_project')
    sim = proj.newProtocol(P.GeoDLProtSimulate, nParticles=2000, seed=0)
    proj.launchProtocol(sim, wait=True)
    train = proj.newProtocol(P.GeoDLProtTrain, epochs=8)
    train.inputParticles.set(sim); train.inputParticles.setExtended('outputParticles')
    train.inputReference.set(sim); train.inputReference.setExtended('outputReference')
    proj.launchProtocol(train, wait=True)
    pred = proj.newProtocol(P.GeoDLProtPredict)
    pred.inputModel.set(train); pred.inputModel.setExtended('outputModel')
    pred.inputParticles.set(sim); pred.inputParticles.setExtended('outputParticles')
    proj.launchProtocol(pred, wait=True)
    land = proj.newProtocol(P.GeoDLProtLandscape)
    land.inputParticles.set(pred); land.inputParticles.setExtended('outputParticles')
    proj.launchProtocol(land, wait=True)
    path = proj.newProtocol(P.GeoDLProtStructures, pathType=2, pathKind=0, nPoints=10)
    path.inputLandscape.set(land)
    proj.launchProtocol(path, wait=True)
    assert path.isFinished(), path.getErrorMessage()

    from continuousflex_geodl.viewers import GeoDLPathwayViewer
    viewer = GeoDLPathwayViewer(project=proj, protocol=path)
    viewer.setProtocol(path)
    print(viewer.saveAll('figures'))   # pathway map PNG, GIF, .cxc, .pdb

``setup_environment(root)`` is the headless set-up (also used by the tests):
Scipion reads its configuration from environment variables when pyworkflow
is first imported and passes them to every protocol process, so call it
before importing pyworkflow / pwem.
"""
import argparse
import json
import os
import shutil
import sys
import time

from .core.fileio import atomic_write_text
from .core.runtime import default_keops_cache
from .core.settings import RuntimeSettings, SimulateSettings

HOSTS = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME =
MANDATORY = False
"""

#: training epochs and time budget (minutes) of the default demo (2 CPU cores)
DEFAULT_EPOCHS = 30
DEFAULT_TIME_LIMIT = 9.0
DEFAULT_PROJECT = 'continuousflex_geodl_demo'


def setup_environment(root, python=None, override=True):
    """Headless Scipion configuration under ``root``; returns the variables set.

    SCIPION_HOME (an existing folder), SCIPION_USER_DATA (projects),
    SCIPION_DOMAIN=pwem, SCIPION_PYTHON (``python``, default this
    interpreter: it must have the plugin), SCIPION_TEST_NOSYNC, a hosts file
    with no queue system and an empty scipion.conf.  With ``override=False``
    variables already in the environment are kept.  If pyworkflow is already
    imported, its ``Config`` is patched too.
    """
    root = os.path.abspath(root)
    home = os.path.join(root, 'scipion_home')
    user = os.path.join(root, 'ScipionUserData')
    config = os.path.join(home, 'config')
    for d in (home, user, config, os.path.join(user, 'logs'), os.path.join(root, 'tests')):
        os.makedirs(d, exist_ok=True)
    hosts = os.path.join(config, 'hosts.conf')
    if not os.path.exists(hosts):
        with open(hosts, 'w') as f:
            f.write(HOSTS)
    conf = os.path.join(config, 'scipion.conf')
    if not os.path.exists(conf):
        with open(conf, 'w') as f:
            f.write('[PYWORKFLOW]\n\n[PLUGINS]\n')
    python = python or sys.executable
    keops = os.environ.get('KEOPS_CACHE_FOLDER') or default_keops_cache()
    values = {
        'SCIPION_HOME': home,
        'SCIPION_USER_DATA': user,
        'SCIPION_LOGS': os.path.join(user, 'logs'),
        'SCIPION_TESTS': os.path.join(root, 'tests'),
        'SCIPION_CONFIG': conf,
        'SCIPION_LOCAL_CONFIG': conf,
        'SCIPION_HOSTS': hosts,
        'SCIPION_DOMAIN': 'pwem',
        'SCIPION_PYTHON': python,
        'SCIPION_TEST_NOSYNC': '1',
        'SCIPION_NOTIFY': '0',
        'SCIPION_USE_QUEUE': 'False',
        'KEOPS_CACHE_FOLDER': keops,
        'CFGEODL_KEOPS_CACHE': keops,
        'CFGEODL_PYTHON': python,
        'MPLBACKEND': 'Agg',
    }
    if not override:
        values = {k: os.environ.get(k, v) for k, v in values.items()}
    os.environ.update(values)
    if 'pyworkflow' in sys.modules:
        _patch_loaded_pyworkflow(values)
    return values


def _patch_loaded_pyworkflow(values):
    """pyworkflow already read its config: make it see ``values`` too."""
    import pyworkflow as pw
    import pyworkflow.config as pwconfig
    for key, value in values.items():
        if hasattr(pw.Config, key):
            setattr(pw.Config, key, value)
    pw.PYTHON = values['SCIPION_PYTHON']
    if hasattr(pwconfig, 'PYTHON'):
        pwconfig.PYTHON = values['SCIPION_PYTHON']


def create_project(name, out=None):
    """New Scipion project ``name`` (replacing an old one of ours).

    The project lives in the Scipion user-data folder when that is inside
    ``out`` (the headless set-up), else in ``out`` itself with a link in the
    user's project list (an existing Scipion installation).  Never deletes
    a project outside ``out``.  The cwd becomes the project folder (Scipion
    resolves run paths from it).
    """
    from pyworkflow.project import Manager
    manager = Manager()
    default = manager.getProjectPath(name)
    inside = out is None or _is_inside(manager.PROJECTS, out)
    path = default if inside else os.path.join(os.path.abspath(out), name)
    if os.path.lexists(default):
        real = os.path.realpath(default)
        if out is not None and not _is_inside(real, out):
            raise ValueError("A Scipion project named '%s' already exists outside %s (%s); "
                             "choose another name with --project." % (name, out, real))
        if os.path.islink(default):
            os.remove(default)
        if os.path.isdir(real):
            shutil.rmtree(real)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(manager.PROJECTS, exist_ok=True)  # where the link to the project goes
    proj = manager.createProject(name, location=None if inside else os.path.abspath(out))
    os.chdir(proj.path)
    return proj


def _is_inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def run_protocol(proj, prot, log=print):
    """Launch ``prot`` in ``proj`` and wait; RuntimeError naming the run and its log
    when it does not finish."""
    t0 = time.time()
    log('--> %s' % prot.getClassLabel())
    proj.launchProtocol(prot, wait=True)
    if not prot.isFinished():
        logs = [os.path.abspath(fn) for fn in prot.getLogPaths()[:2]]
        tail = ''
        for fn in logs:
            if os.path.exists(fn):
                with open(fn, errors='replace') as f:
                    tail += f.read()[-3000:]
        raise RuntimeError('Protocol "%s" (%s) %s: %s\nLogs: %s\n--- end of the log ---\n%s'
                           % (prot.getRunName(), prot.getClassLabel(), prot.getStatus(),
                              prot.getErrorMessage(), ', '.join(logs), tail))
    log('    done in %.1f s (%s)' % (time.time() - t0, os.path.abspath(prot.getWorkingDir())))
    return prot


def _point(pointer, prot, attr):
    pointer.set(prot)
    pointer.setExtended(attr)


def run_chain(proj, n_particles=2000, seed=0, device='cpu', epochs=None, time_limit=None,
              box=64, apix=2.0, snr=0.1, zdim=None, batch_size=None, n_points=10,
              threads=2, bootstrap=None, log=print):
    """simulate -> train -> predict -> landscape -> pathway in ``proj``; {step: protocol}.

    ``epochs`` None: ``DEFAULT_EPOCHS`` within ``time_limit`` minutes
    (default ``DEFAULT_TIME_LIMIT``); given: exactly that many (no time
    limit unless ``time_limit`` is given).  ``bootstrap`` (populations, free
    energy) replicates of the landscape (default: the protocol's).
    """
    from continuousflex_geodl import protocols as P
    gpu = str(device).startswith('cuda')
    steps = {}
    sim = proj.newProtocol(P.GeoDLProtSimulate, nParticles=n_particles, box=box, apix=apix,
                           snr=snr, seed=seed)
    steps['simulate'] = run_protocol(proj, sim, log)

    train = proj.newProtocol(P.GeoDLProtTrain, seed=seed, useGpu=gpu, numberOfThreads=threads)
    if epochs is None:
        train.epochs.set(DEFAULT_EPOCHS)
        time_limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    else:
        train.epochs.set(int(epochs))
    if time_limit:
        train.timeLimit.set(float(time_limit))
    if zdim:
        train.zdim.set(int(zdim))
    if batch_size:
        train.batchSize.set(int(batch_size))
    _point(train.inputParticles, sim, 'outputParticles')
    _point(train.inputReference, sim, 'outputReference')
    steps['train'] = run_protocol(proj, train, log)

    pred = proj.newProtocol(P.GeoDLProtPredict, useGpu=gpu, numberOfThreads=threads)
    _point(pred.inputModel, train, 'outputModel')
    _point(pred.inputParticles, sim, 'outputParticles')
    steps['predict'] = run_protocol(proj, pred, log)

    land = proj.newProtocol(P.GeoDLProtLandscape, seed=seed)
    if bootstrap is not None:
        land.bootstrap.set(int(bootstrap[0]))
        land.feBootstrap.set(int(bootstrap[1]))
    _point(land.inputParticles, pred, 'outputParticles')
    steps['landscape'] = run_protocol(proj, land, log)

    states = land._readJson(land._landscape().states_path, {})
    n_states = int(states.get('n_states', 1))
    kind = 0 if n_states >= 2 else 2  # density path between two states, else along PC1
    if kind == 2:
        log('    one state only: the pathway follows the first principal axis')
    path = proj.newProtocol(P.GeoDLProtStructures, pathType=2, pathKind=kind,
                            nPoints=n_points, useGpu=gpu)
    path.inputLandscape.set(land)
    steps['pathway'] = run_protocol(proj, path, log)
    return steps


def write_results(proj, steps, folder, log=print):
    """Run the viewers of the chain: figures, pathway GIF / .cxc / .pdb in ``folder``.

    Returns {name: path}; also written to ``folder/results.json`` with the
    other outputs of the chain.
    """
    from continuousflex_geodl import viewers as V
    t0 = time.time()
    os.makedirs(folder, exist_ok=True)
    files, skipped = {}, {}
    for step, cls in (('train', V.GeoDLTrainViewer), ('predict', V.GeoDLLatentsViewer),
                      ('landscape', V.GeoDLLandscapeViewer), ('pathway', V.GeoDLPathwayViewer)):
        prot = steps.get(step)
        if prot is None:
            continue
        viewer = cls(project=proj, protocol=prot)
        if hasattr(viewer, 'setProtocol'):
            viewer.setProtocol(prot)
        files.update(viewer.saveAll(folder))
        skipped.update(viewer.skipped)
    for ext in ('cxc', 'pdb'):  # written next to the GIF by the pathway viewer
        fn = os.path.join(folder, 'pathway.' + ext)
        if os.path.exists(fn):
            files['pathway_' + ext] = fn
    for name, why in skipped.items():
        log('    (no %s: %s)' % (name, why))
    log('    figures and animation written in %.1f s' % (time.time() - t0))
    return files


def _outputs(proj, steps, files):
    """Where everything is, as a JSON-able dict."""
    out = dict(project=os.path.abspath(proj.path), results=files, runs={})
    for name, prot in steps.items():
        out['runs'][name] = dict(run=prot.getRunName(), folder=os.path.abspath(
            prot.getWorkingDir()), outputs=[k for k, _ in prot.iterOutputAttributes()])
    train, land, path = steps.get('train'), steps.get('landscape'), steps.get('pathway')
    if train is not None:
        out['model'] = os.path.abspath(train.outputModel.getModelDir())
    if 'predict' in steps:
        out['latents'] = os.path.abspath(steps['predict']._getLatentsFile())
    if land is not None:
        out['landscape'] = os.path.abspath(land._getLandscapeDir())
        if getattr(land, 'outputVolumes', None) is not None:
            out['state_maps'] = [os.path.abspath(v.getFileName())
                                 for v in land.outputVolumes.iterItems(orderBy='id')]
    if path is not None:
        if getattr(path, 'outputVolumes', None) is not None:
            out['pathway_maps'] = [os.path.abspath(v.getFileName())
                                   for v in path.outputVolumes.iterItems(orderBy='id')]
        if getattr(path, 'outputStructures', None) is not None:
            out['pathway_pdb'] = os.path.abspath(path.outputStructures.getFileName())
    return out


def run_workflow(out, n_particles=SimulateSettings.n_particles, seed=SimulateSettings.seed,
                 device=RuntimeSettings.device, epochs=None, box=SimulateSettings.box,
                 apix=SimulateSettings.apix, snr=SimulateSettings.snr, zdim=None,
                 project=DEFAULT_PROJECT, time_limit=None,
                 batch_size=None, n_points=10, threads=2, bootstrap=None, results=None,
                 log=print):
    """Run the chain in a new project under ``out`` and write the viewers' files.

    Returns dict(project=Project, steps={step: protocol}, files={name: path},
    outputs=the content of ``results/results.json``).
    """
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    setup_environment(out, override=False)
    cwd = os.getcwd()
    t0 = time.time()
    try:
        proj = create_project(project, out)
        log('Scipion project %s (%s)' % (project, proj.path))
        steps = run_chain(proj, n_particles=n_particles, seed=seed, device=device,
                          epochs=epochs, time_limit=time_limit, box=box, apix=apix, snr=snr,
                          zdim=zdim, batch_size=batch_size, n_points=n_points,
                          threads=threads, bootstrap=bootstrap, log=log)
        log('--> viewers')
        folder = results or os.path.join(out, 'results')
        files = write_results(proj, steps, folder, log)
        info = _outputs(proj, steps, files)
        info['seconds'] = round(time.time() - t0, 1)
        atomic_write_text(os.path.join(folder, 'results.json'), json.dumps(info, indent=1))
        _print_outputs(info, project, log)
        return dict(project=proj, steps=steps, files=files, outputs=info)
    finally:
        os.chdir(cwd)


def _print_outputs(info, project, log):
    res = info['results']
    rows = [('Scipion project', info['project']),
            ('trained model', info.get('model')),
            ('latents', info.get('latents')),
            ('landscape', info.get('landscape'))]
    for key, label in (('state_maps', 'state maps'), ('pathway_maps', 'pathway maps')):
        maps = info.get(key) or []
        if maps:
            rows.append((label, '%s ... (%d maps)' % (maps[0], len(maps))))
    rows += [('pathway PDB', res.get('pathway_pdb') or info.get('pathway_pdb')),
             ('animation GIF', res.get('pathway_animation')),
             ('ChimeraX script', res.get('pathway_cxc'))]
    rows += [('plot', p) for k, p in sorted(res.items())
             if p.endswith('.png')]
    log('\nOutputs (%.0f s):' % info['seconds'])
    for label, value in rows:
        if value:
            log('  %-16s %s' % (label, value))
    root = os.path.dirname(os.path.abspath(os.environ.get('SCIPION_USER_DATA', '.')))
    log('\nOpen the project in the Scipion GUI with:\n  %s -m continuousflex_geodl.workflow '
        '--open --out %s%s' % (sys.executable, root,
                              '' if project == DEFAULT_PROJECT else ' --project ' + project))
    if res.get('pathway_cxc'):
        log('Play the pathway maps in ChimeraX with:\n  chimerax %s' % res['pathway_cxc'])


def open_gui(out, project=DEFAULT_PROJECT):
    """Open the demo project in ``out`` in the Scipion GUI (same configuration)."""
    import subprocess
    if not os.path.isdir(os.path.join(os.path.abspath(out), 'ScipionUserData', 'projects',
                                      project)):
        print("ERROR: no Scipion project '%s' in %s: run the demo first." % (project, out),
              file=sys.stderr)
        return 2
    values = setup_environment(out, override=False)
    values.pop('MPLBACKEND', None)
    env = dict(os.environ)
    env.pop('MPLBACKEND', None)
    return subprocess.call([sys.executable, '-m', 'scipion', 'project', project], env=env)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m continuousflex_geodl.workflow',
                                description=__doc__.strip().splitlines()[0])
    p.add_argument('--out', default='demo_output', help='output folder (created)')
    p.add_argument('--n-particles', type=int, default=SimulateSettings.n_particles,
                   help='particles to simulate')
    p.add_argument('--epochs', type=int, default=None,
                   help='training epochs (default %d, within --time-limit)' % DEFAULT_EPOCHS)
    p.add_argument('--time-limit', type=float, default=None,
                   help='training budget in minutes (default %g when --epochs is not '
                        'given; 0: none)' % DEFAULT_TIME_LIMIT)
    p.add_argument('--seed', type=int, default=SimulateSettings.seed, help='random seed')
    p.add_argument('--device', default=RuntimeSettings.device, help="'cpu' or 'cuda'")
    p.add_argument('--box', type=int, default=SimulateSettings.box,
                   help='particle box (px, even)')
    p.add_argument('--apix', type=float, default=SimulateSettings.apix, help='pixel size (A/px)')
    p.add_argument('--threads', type=int, default=2, help='CPU threads of train / predict')
    p.add_argument('--project', default=DEFAULT_PROJECT, help='Scipion project name')
    p.add_argument('--open', action='store_true',
                   help='open the project in --out in the Scipion GUI (after a run)')
    args = p.parse_args(argv)
    if args.open:
        return open_gui(args.out, args.project)
    try:
        run_workflow(args.out, n_particles=args.n_particles, seed=args.seed,
                     device=args.device, epochs=args.epochs, time_limit=args.time_limit,
                     box=args.box, apix=args.apix, threads=args.threads,
                     project=args.project)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print('ERROR: %s' % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())

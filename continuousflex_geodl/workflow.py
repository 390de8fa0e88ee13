"""The whole chain as Scipion protocols, in a headless Scipion project.

``python -m continuousflex_geodl.workflow --out DIR`` (what ``continuousflex-geodl
demo --scipion`` runs) creates a Scipion project inside ``DIR`` and runs, as
the GUI would (each protocol in its own process): simulate particles -> train
-> predict latents -> landscape -> structures along a pathway (the last two
when those protocols exist).  Open the project afterwards with
``SCIPION_USER_DATA=DIR/ScipionUserData python -m scipion project <name>``.

``setup_environment(root)`` is the headless set-up (also used by the tests):
Scipion reads its configuration from environment variables when pyworkflow
is first imported and passes them to every protocol process, so call it
before importing pyworkflow / pwem.
"""
import argparse
import os
import sys
import time

HOSTS = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
NAME =
MANDATORY = False
"""


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
    keops = os.environ.get('KEOPS_CACHE_FOLDER') or os.path.join(
        os.path.expanduser('~'), '.cache', 'continuousflex_geodl', 'keops')
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


def create_project(name):
    """New Scipion project ``name`` (replacing an old one); cwd becomes its folder."""
    from pyworkflow.project import Manager
    manager = Manager()
    if manager.hasProject(name):
        manager.deleteProject(name)
    proj = manager.createProject(name)
    os.chdir(proj.path)  # Scipion resolves run paths from the project folder
    return proj


def run_protocol(proj, prot, log=print):
    """Launch ``prot`` in ``proj``, wait, raise RuntimeError with its log on failure."""
    t0 = time.time()
    log('--> %s' % prot.getClassLabel())
    proj.launchProtocol(prot, wait=True)
    if not prot.isFinished():
        tail = ''
        for fn in prot.getLogPaths()[:2]:
            if os.path.exists(fn):
                with open(fn) as f:
                    tail += f.read()[-3000:]
        raise RuntimeError('Protocol "%s" %s: %s\n%s' % (prot.getRunName(), prot.getStatus(),
                                                         prot.getErrorMessage(), tail))
    log('    done in %.1f s (%s)' % (time.time() - t0, prot.getWorkingDir()))
    return prot


def _point(pointer, prot, attr):
    pointer.set(prot)
    pointer.setExtended(attr)


def run_workflow(out, n_particles=2000, seed=0, device='cpu', epochs=None, box=64,
                 apix=2.0, snr=0.1, zdim=None, project='continuousflex_geodl_demo',
                 log=print):
    """Run the chain in a new project under ``out``; return {step: protocol}."""
    setup_environment(os.path.join(out), override=False)
    from continuousflex_geodl import protocols as P
    cwd = os.getcwd()
    try:
        proj = create_project(project)
        steps = {}
        sim = proj.newProtocol(P.GeoDLProtSimulate, nParticles=n_particles, box=box,
                               apix=apix, snr=snr, seed=seed)
        steps['simulate'] = run_protocol(proj, sim, log)

        train = proj.newProtocol(P.GeoDLProtTrain, seed=seed, useGpu=device != 'cpu')
        if epochs:
            train.epochs.set(epochs)
        if zdim:
            train.zdim.set(zdim)
        _point(train.inputParticles, sim, 'outputParticles')
        _point(train.inputReference, sim, 'outputReference')
        steps['train'] = run_protocol(proj, train, log)

        pred = proj.newProtocol(P.GeoDLProtPredict, useGpu=device != 'cpu')
        _point(pred.inputModel, train, 'outputModel')
        _point(pred.inputParticles, sim, 'outputParticles')
        steps['predict'] = run_protocol(proj, pred, log)

        if hasattr(P, 'GeoDLProtLandscape'):
            land = proj.newProtocol(P.GeoDLProtLandscape)
            _point(land.inputParticles, pred, 'outputParticles')
            steps['landscape'] = run_protocol(proj, land, log)
            if hasattr(P, 'GeoDLProtStructures'):
                struct = proj.newProtocol(P.GeoDLProtStructures)
                _point(struct.inputLandscape, land, 'outputParticles')
                steps['structures'] = run_protocol(proj, struct, log)
        log('\nScipion project: %s' % proj.path)
        log('Open it with: SCIPION_USER_DATA=%s python -m scipion project %s'
            % (os.environ['SCIPION_USER_DATA'], project))
        return steps
    finally:
        os.chdir(cwd)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m continuousflex_geodl.workflow',
                                description=__doc__.strip().splitlines()[0])
    p.add_argument('--out', default='demo_output', help='output folder (created)')
    p.add_argument('--n-particles', type=int, default=2000)
    p.add_argument('--epochs', type=int, default=None)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu')
    p.add_argument('--project', default='continuousflex_geodl_demo')
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    try:
        run_workflow(os.path.abspath(args.out), n_particles=args.n_particles, seed=args.seed,
                     device=args.device, epochs=args.epochs, project=args.project)
    except (RuntimeError, ValueError) as exc:
        print('ERROR: %s' % exc, file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())

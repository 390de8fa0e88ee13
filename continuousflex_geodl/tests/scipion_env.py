"""Headless Scipion environment for the tests (configure before pyworkflow).

Scipion reads its configuration from environment variables when pyworkflow
is first imported, and runs every protocol in a subprocess that inherits
them.  ``configure()`` calls ``continuousflex_geodl.workflow.setup_environment``
on a private temporary folder (SCIPION_HOME, SCIPION_USER_DATA,
SCIPION_DOMAIN=pwem, SCIPION_PYTHON = this interpreter, SCIPION_TEST_NOSYNC=1,
a hosts file without queue system, KeOps cache, Agg backend); if pyworkflow
was already imported its ``Config`` is patched to the same values.
``skip_reason()`` tells why Scipion tests cannot run here (pyworkflow, pwem or
tkinter not importable), or None.

Set ``CFGEODL_KEEP_SCIPION_DATA=1`` to keep the folder (its path is in
``SCIPION_USER_DATA``) for reading protocol logs after a failure.
"""
import atexit
import contextlib
import os
import shutil
import tempfile

_ROOT = None


def skip_reason():
    """Why Scipion-based tests must be skipped here, or None when they can run."""
    for mod in ('pyworkflow', 'pwem', 'tkinter'):
        try:
            __import__(mod)
        except Exception as exc:  # ImportError, or a broken install
            return 'Scipion tests need %s, which cannot be imported here: %s' % (mod, exc)
    return None


def needs_scipion():
    """``configure()``, then a pytest mark that skips a test, with the reason,
    where Scipion cannot run (``skip_reason``)."""
    import pytest
    configure()
    why = skip_reason()
    return pytest.mark.skipif(why is not None, reason=why or '')


def configure():
    """Set the headless Scipion environment once per process; return its root."""
    global _ROOT
    if _ROOT is not None:
        return _ROOT
    from continuousflex_geodl.workflow import setup_environment
    root = tempfile.mkdtemp(prefix='cfgeodl_scipion_')
    if os.environ.get('CFGEODL_KEEP_SCIPION_DATA') != '1':
        atexit.register(shutil.rmtree, root, True)
    from continuousflex_geodl.core.runtime import default_keops_cache
    os.environ.setdefault('KEOPS_CACHE_FOLDER', default_keops_cache('keops-tests'))
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    setup_environment(root)
    _ROOT = root
    return root


def particle_set(sqlite, stack, n, apix, box=None, ctf=True, alignment=None,
                 transforms=None, defocus=None, extra=None):
    """A ``SetOfParticles`` written to ``sqlite``: images 1..``n`` of ``stack``
    at ``apix`` A/px (the set's dimensions ``box`` when given), acquired at
    300 kV, Cs 2.7 mm, amplitude contrast 0.1.

    ``ctf``: a CTF per particle, defocus ``defocus(i)`` -> (U, V, angle)
    (default 15000 A, 15000 A, 0 deg).  ``transforms``: 4x4 matrices, one per
    particle; ``alignment``: the set's alignment (default ALIGN_PROJ with
    transforms, ALIGN_NONE without).  ``extra(i, particle)`` sets anything else
    before the particle is appended.  Call after ``configure()``.
    """
    from pwem.constants import ALIGN_NONE, ALIGN_PROJ
    from pwem.objects import Acquisition, CTFModel, Particle, SetOfParticles, Transform
    pset = SetOfParticles(filename=sqlite)
    pset.setSamplingRate(apix)
    acq = Acquisition(voltage=300.0, sphericalAberration=2.7, amplitudeContrast=0.1)
    pset.setAcquisition(acq)
    pset.setHasCTF(ctf)
    if alignment is None:
        alignment = ALIGN_NONE if transforms is None else ALIGN_PROJ
    pset.setAlignment(alignment)
    for i in range(n):
        p = Particle()
        p.setLocation(i + 1, stack)
        p.setSamplingRate(apix)
        p.setAcquisition(acq)
        if ctf:
            c = CTFModel()
            c.setStandardDefocus(*(defocus(i) if defocus else (15000.0, 15000.0, 0.0)))
            p.setCTF(c)
        if transforms is not None:
            p.setTransform(Transform(transforms[i]))
        if extra is not None:
            extra(i, p)
        pset.append(p)
    if box is not None:
        pset.setDim((box, box, 1))
    pset.write()
    return pset


@contextlib.contextmanager
def new_project(prefix='cfgeodl'):
    """A fresh Scipion project named ``prefix_<random>``; the working folder
    is the project's while the block runs.  Call after ``configure()``."""
    import uuid
    from pyworkflow.project import Manager
    cwd = os.getcwd()
    proj = Manager().createProject('%s_%s' % (prefix, uuid.uuid4().hex[:8]))
    os.chdir(proj.path)
    try:
        yield proj
    finally:
        os.chdir(cwd)


def launch(proj, prot, info=True):
    """Run ``prot`` in ``proj`` and wait; fail the test with the run's status,
    error and the end of its logs if it did not finish.  ``info``: also check
    that the info panel of the finished run renders (summary, methods,
    citations)."""
    import pytest
    proj.launchProtocol(prot, wait=True)
    if not prot.isFinished():
        logs = ''
        for fn in prot.getLogPaths()[:2]:
            if os.path.exists(fn):
                logs += open(fn).read()[-3000:]
        pytest.fail('%s did not finish (%s): %s\n%s' % (prot.getRunName(), prot.getStatus(),
                                                         prot.getErrorMessage(), logs))
    if info:
        assert prot.summary() and 'not ready' not in ' '.join(prot.summary())
        prot.methods()
        prot.citations()
    return prot

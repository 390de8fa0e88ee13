"""Scipion-free scientific core of continuousflex_geodl.

Nothing below this package imports Scipion (pyworkflow / pwem).  Heavy
libraries (torch, pykeops, geomloss) are imported by the modules that need
them; ``core.runtime.setup()`` prepares them (denormal flushing, KeOps cache).

Conventions shared by every module (units and axes)
---------------------------------------------------
* Lengths are in Angstrom (A) unless a name says ``_px``.  ``apix`` is the
  pixel size in A/pixel.  ``box`` (D) is the image side in pixels (even).
* Images are arrays ``(..., D, D)`` indexed ``[iy, ix]``.  The centre of pixel
  ``i`` along an axis is at ``(i - D // 2) * apix``: the origin is pixel
  ``D // 2`` (RELION / cryoDRGN convention).
* Volumes are arrays ``(D, D, D)`` indexed ``[iz, iy, ix]`` (MRC order) on
  the same centred grid.
* A structure is a point cloud of Gaussian pseudo-atoms: ``positions``
  ``(N, 3)`` in A as (x, y, z) relative to the box centre, ``amplitudes``
  ``(N,)`` (arbitrary units, e.g. mass), and a width ``sigma`` in A, i.e.
  ``V(r) = sum_j a_j exp(-|r - x_j|^2 / (2 sigma^2))``.
* Orientation: ZYZ Euler angles (rot, tilt, psi) in degrees; the matrix
  ``R = geometry.euler_to_matrix(rot, tilt, psi)`` is Xmipp's
  ``Euler_angles2matrix`` (also RELION's).  A point ``x`` projects to image
  position ``(R @ x)[:2]``; the projection integrates along ``(R @ x)[2]``.
* In-plane shift ``t`` (A, (tx, ty)): the projected molecule centre lies at
  box centre + t.  RELION's origin is ``-t``
  (``t = -rlnOriginXAngst``; particle centre = box centre - origin).
* CTF: ``ctf.compute_ctf`` is the docs/DESIGN.md / cryoDRGN formula
  ``C = sqrt(1-w^2) sin(gamma) - w cos(gamma)`` (negative at zero
  frequency).  Particles are stored "protein white" (as RELION particle
  stacks), so the image-formation filter is ``-C``:
  ``I = IFFT(-C * FFT(P))``.  ``render.project(..., ctf=C)`` applies ``-C``.
* Fourier frequencies are ``numpy.fft.fftfreq(D, d=apix)`` in 1/A, with the
  unshifted FFT layout unless a name says ``_centered``.
"""
# console output of the core's loggers (INFO to stdout, warnings to stderr): core.logs
from . import logs  # noqa: E402,F401

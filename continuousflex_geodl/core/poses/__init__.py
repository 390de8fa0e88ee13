"""Pose-free route: global pose search of particles against a reference.

``search_poses(pset, reference)`` (``core.poses.search``) assigns every
particle a rotation, a shift and a confidence by a coarse-to-fine search over
SO(3) x shifts with frequency marching, CTF-aware, batched in torch;
``posed_particles`` puts them on a copy of the particle set, and the
``continuousflex-geodl poses`` command writes it as a RELION 3.1 star.

Star columns written (besides rlnAngleRot/Tilt/Psi and rlnOriginX/YAngst
with RELION's sign, origin = -t):

* ``_cfgeodlPoseConfidence`` -- posterior mass, under the Gaussian
  likelihood with the best template scale, of the best pose's basin among
  the K refined candidates (0-1; like RELION's
  ``_rlnMaxValueProbDistribution`` but summed over the basin).  Between
  1/K and 1; for images that carry no signal typically 0.3-0.8 (K = 3),
  for clean particles 1.  The Gaussian likelihood makes it saturate at 1
  for most real particles at SNR >= 0.1: it flags images without signal,
  it does not rank the real ones.
* ``_cfgeodlPoseScore`` -- matched-filter statistic of the best pose,
  ``Re<h, X> / (||h|| noise_sd)`` with h the CTF-modulated projection (noise
  standard deviations; ~ sqrt(2 x log-likelihood ratio)).
* ``_cfgeodlPoseReference`` -- with several references
  (``search_poses_multi``, ``poses --reference A.pdb B.pdb ...``): the
  1-based index of the reference whose pose was kept.

Pose repair from given poses: ``refine_poses`` (local search) against one
reference or against one cloud per particle; ``joint.repair_poses(pset,
model)`` refines every particle against the structure a trained model
decodes at its latent (``poses --model``), which repairs the rotations of a
consensus refinement of a heterogeneous sample.

Grids and conventions: ``core.poses.grids``.
"""
from .grids import geodesic_deg, local_offsets, shift_grid, so3_grid  # noqa: F401
from .search import (CONFIDENCE_LABEL, REFERENCE_LABEL, SCORE_LABEL,  # noqa: F401
                     PoseSearchResult, estimate_noise_sd, plan_stages, posed_particles,
                     refine_poses, search_poses, search_poses_multi)

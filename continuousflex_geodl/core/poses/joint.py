"""Pose repair joint with the conformational model.

A consensus refinement of a heterogeneous sample averages conformations, so
its poses are off by a few degrees, and a local search against one reference
structure cannot repair them: the reference does not fit particles of other
conformations, and the misfit biases the rotation.  Here every particle is
refined against its own structure, the cloud a trained model decodes at the
particle's latent (positions (N, M, 3), the model's amplitudes and Gaussian
width), with ``refine_poses``' local stages and gradient polish.  With the
true structure of every particle (a simulation's ground truth) the same call
is the oracle local search.

``repair_poses(pset, model)`` infers the latents when none are given (the
encoder plus the latent refinement of ``infer``), decodes the clouds, refines
the poses, and, for ``rounds`` > 1, infers the latents again with the
repaired poses and repeats.  The ``poses --model`` command writes the result
as a RELION star (origin = -t).
"""
import logging

import numpy as np

from ..settings import InferSettings, PoseSettings
from .search import refine_poses

logger = logging.getLogger(__name__)


def superpose(positions, target, weights=None):
    """Clouds ``positions`` (B, M, 3) rigidly superposed (weighted Kabsch:
    rotation and translation, no reflection) onto ``target`` (M, 3)."""
    X = np.asarray(positions, np.float64)
    Y = np.asarray(target, np.float64)
    w = np.ones(X.shape[1]) if weights is None else np.asarray(weights, np.float64)
    w = np.broadcast_to(w, X.shape[:2]) / np.sum(np.broadcast_to(w, X.shape[:2]), 1,
                                                  keepdims=True)
    mx = np.einsum('bm,bmk->bk', w, X)
    my = np.einsum('bm,mk->bk', w, Y)
    H = np.einsum('bm,bmi,bmj->bij', w, X - mx[:, None], Y[None] - my[:, None])
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, 1, 2) @ np.swapaxes(U, 1, 2)))
    D = np.zeros_like(H)
    D[:, 0, 0] = D[:, 1, 1] = 1.0
    D[:, 2, 2] = d
    R = np.swapaxes(Vt, 1, 2) @ D @ np.swapaxes(U, 1, 2)  # maps X - mx onto Y - my
    return np.einsum('bij,bmj->bmi', R, X - mx[:, None]) + my[:, None]


def model_clouds(model, z, batch_size=256, rigid=False):
    """Per-particle reference decoded by ``model`` at latents z (N, K):
    (positions (N, M, 3) float32 A, amplitudes (M,) or (N, M) float32, sigma A),
    the cloud the model renders for each particle (its global image scale
    does not matter: pose scores are scale-free).

    Unless ``rigid``, every cloud is superposed (amplitude-weighted Kabsch) on
    the model's reference cloud: a model trained on wrong poses learns to
    undo them, decoding each particle's structure shifted and turned by its
    pose error (measured: clouds off-centre by 1-1.5 A with consensus-like
    poses, 0.2 A with exact ones); refining the pose against such a cloud
    keeps the error.  Superposed, only the conformation is kept and the pose
    carries the rigid-body part, in the frame of the reference (the frame of
    the ground truth of a simulation whose structures were superposed on it)."""
    import torch
    from ..inference import _as_latents
    z = _as_latents(model, z)
    pos, amp = [], []
    with torch.no_grad():
        for s in range(0, len(z), batch_size):
            zz = torch.as_tensor(np.asarray(z[s:s + batch_size]), device=model.ref_pos.device)
            p, a = model.decode(zz)
            pos.append(p.cpu().numpy().astype(np.float32))
            amp.append(a.cpu().numpy().astype(np.float32))
    amp = amp[0] if amp[0].ndim == 1 else np.concatenate(amp)
    pos = np.concatenate(pos)
    if not rigid:
        pos = superpose(pos, model.ref_pos.detach().cpu().numpy(),
                        model.ref_amp.detach().cpu().numpy()).astype(np.float32)
    return pos, amp, float(model.sigma.item())


def model_latents(model, pset, refine_steps=InferSettings.refine_steps,
                  batch_size=InferSettings.batch_size):
    """Latents (N, K) of ``pset`` at its current poses, as ``infer`` computes them
    (encoder, then ``refine_steps`` of per-particle latent refinement)."""
    from ..inference import infer_latents, refine_latents
    z = infer_latents(model, pset, batch_size=batch_size)
    if refine_steps > 0:
        z = refine_latents(model, pset, z, steps=refine_steps,
                           batch_size=min(batch_size, InferSettings.refine_batch_size))
    return np.asarray(z, np.float32)


def repair_poses(pset, model, z=None, euler=None, shifts=None,
                 rounds=PoseSettings.rounds, start_step=PoseSettings.local_step,
                 final_step=PoseSettings.final_step,
                 max_shift=PoseSettings.max_shift, resolution=PoseSettings.resolution,
                 batch_size=PoseSettings.batch_size, use_ctf=True,
                 refine_steps=InferSettings.refine_steps, device='cpu', log=None):
    """Local pose refinement of every particle against the structure ``model``
    decodes at its latent (module docstring).

    Starts from ``euler`` / ``shifts`` (default: the set's own poses).  ``z``:
    latents (N, K) for the first round (default: inferred at the starting
    poses); later rounds infer them again at the repaired poses.  Returns
    (``PoseSearchResult``, latents used in the last round).
    """
    log = log or (lambda msg: None)
    if rounds < 1:
        raise ValueError('repair_poses: rounds must be at least 1 (got %d)' % rounds)
    work = pset.subset(np.arange(len(pset)))
    if euler is not None:
        work.euler = np.asarray(euler, np.float64)
    if shifts is not None:
        work.shifts = np.asarray(shifts, np.float64)
    if work.euler is None:
        raise ValueError('repair_poses needs starting poses (a star with angles): run '
                         'the global search (poses --reference) first')
    res = None
    for r in range(int(rounds)):
        if z is None or r > 0:
            log('round %d: inferring latents at the current poses' % (r + 1))
            z = model_latents(model, work, refine_steps=refine_steps)
        elif len(z) != len(pset):
            raise ValueError('%d latents for %d particles' % (len(z), len(pset)))
        clouds = model_clouds(model, z)
        log('round %d: refining poses against %d per-particle clouds of %d pseudo-atoms'
            % (r + 1, clouds[0].shape[0], clouds[0].shape[1]))
        res = refine_poses(work, clouds, start_step=start_step, final_step=final_step,
                           max_shift=max_shift, resolution=resolution,
                           batch_size=batch_size, use_ctf=use_ctf, device=device, log=log)
        work.euler, work.shifts = res.euler, res.shifts
    return res, z


#: percentiles of the latents' first principal axis at which ``axis_latents``
#: places the structures of a pose-search round (the two ends and the middle)
AXIS_PERCENTILES = (5.0, 50.0, 95.0)


def axis_latents(z, percentiles=AXIS_PERCENTILES, n_near=50):
    """Latent points (len(percentiles), K) along the first principal axis of
    ``z`` (N, K): for each percentile of the particles' coordinate on that
    axis, the mean latent of the ``n_near`` particles closest to it in that
    coordinate (a local average, so that the point lies where particles are,
    even on a curved manifold)."""
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError('axis_latents: need (N >= 2, K) latents, got %s' % (z.shape,))
    zc = z - z.mean(0)
    axis = np.linalg.svd(zc, full_matrices=False)[2][0]
    coord = zc @ axis
    n = max(1, min(int(n_near), len(z)))
    return np.array([z[np.argsort(np.abs(coord - np.percentile(coord, q)))[:n]].mean(0)
                     for q in percentiles], np.float32)


def axis_volumes(model, z, percentiles=AXIS_PERCENTILES, n_near=50, box=None, apix=None):
    """Maps (P, D, D, D) of the structures ``model`` decodes at
    ``axis_latents(z)``, each superposed on the model's reference cloud (as
    ``model_clouds``), so that poses found against them share the reference's
    frame; on the particles' grid unless ``box`` / ``apix`` are given, scaled
    like ``inference.decode_volumes``."""
    import torch
    from ..render import render_volume
    box = model.box if box is None else int(box)
    apix = model.apix if apix is None else float(apix)
    pos, amp, sigma = model_clouds(model, axis_latents(z, percentiles, n_near))
    scale = float(model.log_scale.exp().item())
    vols = []
    with torch.no_grad():
        for i in range(len(pos)):
            a = amp if amp.ndim == 1 else amp[i]
            vols.append(render_volume(torch.as_tensor(pos[i]), torch.as_tensor(a), sigma,
                                      box, apix).cpu().numpy() * scale)
    return np.stack(vols).astype(np.float32)

"""Global pose search of particles against a pseudo-atom reference (torch).

``search_poses(pset, reference)`` finds, for every particle, the rotation R
and shift t (core convention: molecule centre at box centre + t, RELION
origin = -t) that best explain the image as a CTF-modulated projection of
the reference cloud, without any starting pose:

1. **Global stage** (low resolution).  The reference is rendered once for
   every orientation of a quasi-uniform SO(3) grid (``grids.so3_grid``,
   default 10 deg: ~15,000 orientations) on a cropped Fourier grid that
   reaches the stage's resolution (frequency marching: the images are
   Fourier-cropped, i.e. low-passed and downsampled, to the same grid).  The
   CTF is applied on the image side (``-C_b X_b``), so one set of templates
   serves every particle and all (orientation x particle x shift) scores of
   a batch are two real matrix products: the cross term
   ``Re sum_f conj(P_o(f)) (-C_b X_b)(f) exp(2 pi i f.s)`` over a lattice of
   shifts s, and the template norms ``sum_f |P_o|^2 C_b^2``.  Each particle
   keeps its K best *distinct* orientations (best shift each; non-maximum
   suppression at twice the grid step).
2. **Local stages** (increasing resolution).  Each candidate is refined on
   the 27 rotations ``exp([w]x) R`` with ``w in {-h, 0, h}^3`` times a 5 x 5
   shift lattice around its shift, repeatedly until it stays put (pattern
   search); h and the shift step halve every stage and the resolution
   follows (about ``2 r h`` for a molecule of radius r, down to the
   resolution the pseudo-atoms carry).  Templates are particle-specific and
   the scores are batched matrix products.  Candidates more than
   ``PRUNE_NATS`` below their particle's best are dropped after each stage.
3. **Polish**: a few Adam steps of gradient ascent of the score over a small
   rotation and shift of every remaining candidate (the rendering is
   differentiable), which follows the ridges of the score (rotation-shift
   coupling) that a grid crosses at an angle.

Score.  ``cc = Re<h, X> / (||h|| s)`` with h the CTF-modulated template
restricted to the stage's frequency band, X the image and s the noise
standard deviation (estimated from the image background): the matched-filter
statistic, in units of the noise (Parseval with the ortho FFT), independent
of the unknown scale of the reference.  Maximising over the template scale,
the Gaussian log-likelihood ratio of a pose is ``max(cc, 0)^2 / 2`` nats.

Confidence.  After the last stage, the K refined candidates of a particle
get posterior weights ``softmax(max(cc_k, 0)^2 / 2)``; the confidence is the
posterior mass of the candidates within one global grid step of the best
(i.e. of the best pose's basin).  Close to 1 when the best pose is far more
likely than any other basin (saturates there: most real particles at SNR
0.1); between 1/K and 1, typically 0.3-0.8 for pure noise with K = 3.

Cost: the global stage is O(orientations x particles x shifts x band) in
BLAS; local stages render ``particles x K x 27`` templates per move with the
exact separable projector (``render.project``).

``refine_poses`` runs the local stages and the polish from given poses (a
local search; with the true structure as reference, the oracle bound of
local pose refinement).
"""
import inspect
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .grids import geodesic_deg, local_offsets, shift_grid, so3_grid

#: star columns written by the ``poses`` command (see ``core.poses``)
CONFIDENCE_LABEL = 'cfgeodlPoseConfidence'
REFERENCE_LABEL = 'cfgeodlPoseReference'
#: local stages search shifts on a (2 SHIFT_REACH + 1)^2 lattice around the current one
SHIFT_REACH = 2
#: candidates more than this many nats of log-likelihood below their particle's
#: best are dropped after each local stage (posterior weight < 3e-7)
PRUNE_NATS = 15.0
SCORE_LABEL = 'cfgeodlPoseScore'


@dataclass
class PoseSearchResult:
    euler: np.ndarray        # (N, 3) rot, tilt, psi deg
    shifts: np.ndarray       # (N, 2) t in A (core convention; RELION origin = -t)
    rotations: np.ndarray    # (N, 3, 3)
    confidence: np.ndarray   # (N,) posterior mass of the best pose's basin, in (0, 1]
    score: np.ndarray        # (N,) matched-filter statistic cc of the best pose (noise sd units)
    noise_sd: float
    stages: list = field(default_factory=list)
    seconds: float = 0.0
    reference_index: np.ndarray = None  # (N,) 0-based best reference (several references)


# ---------------------------------------------------------------- planning

def electron_wavelength_A(kv):
    kv = float(kv) * 1e3
    return 12.2643247 / math.sqrt(kv * (1 + 0.978466e-6 * kv))


def signal_resolution(sigma):
    """Resolution (A) where a Gaussian atom of width sigma keeps 2 % of its amplitude."""
    return math.pi * float(sigma) / math.sqrt(math.log(50.0) / 2.0)


def ctf_resolution(ctf):
    """Resolution (A) at 1.5x the first CTF zero of the median defocus (None: no CTF)."""
    if ctf is None:
        return None
    ctf = np.asarray(ctf, dtype=np.float64)
    df = float(np.median(0.5 * (ctf[:, 0] + ctf[:, 1])))
    lam = electron_wavelength_A(np.median(ctf[:, 3]))
    if df <= 0:
        return None
    return math.sqrt(lam * df) / 1.5


def plan_stages(box, apix, radius, sigma, ctf=None, coarse_step=10.0, final_step=1.0,
                resolution=None, coarse_resolution=None, max_shift=10.0):
    """Stages of the search: list of dicts (step deg, resolution A, box px, apix A,
    shift step A, render sigma A).  The first one is the global stage."""
    from ..models.imaging import crop_box_for_resolution
    nyq = 2.0 * apix
    res_final = max(nyq, signal_resolution(sigma)) if resolution is None else \
        max(nyq, float(resolution))
    if coarse_resolution is None:
        coarse_resolution = 2.0 * radius * math.radians(coarse_step)
        rc = ctf_resolution(ctf)
        if rc is not None:
            coarse_resolution = min(coarse_resolution, rc)
    res0 = max(res_final, float(coarse_resolution))
    steps = [float(coarse_step)]
    while steps[-1] / 2.0 >= float(final_step) * 0.999:
        steps.append(steps[-1] / 2.0)
    stages = []
    shift_step = max(res0 / 4.0, 1e-3)
    if max_shift > 0:  # whole lattice steps up to max_shift
        shift_step = max_shift / max(1, math.ceil(max_shift / shift_step))
    for k, st in enumerate(steps):
        res = res0 if k == 0 else max(res_final, min(res0, 2.0 * radius * math.radians(st)))
        d = crop_box_for_resolution(box, apix, res)
        apix_c = apix * box / d
        stages.append(dict(step=st, resolution=res, box=int(d), apix=apix_c,
                           shift_step=shift_step / (2 ** k),
                           sigma=max(float(sigma), apix_c / 1.5)))
    return stages


# ---------------------------------------------------------------- helpers

def estimate_noise_sd(pset, radius_A, n=256):
    """Noise sd from the pixels outside ``radius_A`` (median over a sample of images)."""
    N, D = len(pset), pset.box
    idx = np.unique(np.linspace(0, N - 1, min(n, N)).astype(np.int64))
    imgs = np.asarray(pset.images[idx], dtype=np.float64)
    c = (np.arange(D) - D // 2) * pset.apix
    r = np.sqrt(c[None, :] ** 2 + c[:, None] ** 2)
    mask = r > radius_A
    if mask.sum() < 0.1 * D * D:  # molecule fills the box: corners and outer ring
        mask = r > 0.45 * D * pset.apix
    v = imgs[:, mask]
    return float(np.sqrt(np.median(v.var(axis=1))))


class _Band:
    """Fourier band of one stage: half-plane indices (|f| < cutoff, no DC)."""

    def __init__(self, stage, full_box, device):
        import torch
        d, apix_c = stage['box'], stage['apix']
        k = torch.fft.fftfreq(d, d=1.0 / d)  # integer frequencies
        ky, kx = torch.meshgrid(k, k, indexing='ij')
        kr = torch.sqrt(kx ** 2 + ky ** 2)
        kcut = min(d / 2.0 - 1e-3, d * apix_c / stage['resolution'])
        half = (kx > 0) | ((kx == 0) & (ky > 0))
        keep = (kr <= kcut) & half
        self.idx = torch.nonzero(keep.reshape(-1)).squeeze(1).to(device)
        f = torch.fft.fftfreq(d, d=apix_c)
        fy, fx = torch.meshgrid(f, f, indexing='ij')
        self.freqs = torch.stack([fx.reshape(-1), fy.reshape(-1)], 1)[self.idx.cpu()].to(
            device=device, dtype=torch.float32)  # (F, 2) 1/A
        self.d, self.apix, self.full_box = d, apix_c, full_box
        self.sigma = stage['sigma']
        self.device = device

    @property
    def size(self):
        return int(self.idx.numel())

    def select(self, F):
        """(B, d, d) spectra -> (B, F) band coefficients."""
        return F.reshape(F.shape[0], -1).index_select(1, self.idx)

    def images(self, X_full):
        """Ortho spectra (B, D, D) of full images -> band (B, F)."""
        from ..models.imaging import fourier_crop
        return self.select(fourier_crop(X_full, self.d))

    def ctf(self, ctf_rows):
        """-C on the band, (B, F) float32; None without CTF."""
        from ..models.imaging import ctf_values
        if ctf_rows is None:
            return None
        C = ctf_values(ctf_rows, self.d, self.apix, device=self.device)
        return -self.select(C)

    def phases(self, shifts):
        """exp(+2 pi i f.s) for shifts (..., 2) A -> (..., F) complex64."""
        import torch
        ph = 2 * math.pi * (shifts.to(torch.float32) @ self.freqs.T)
        return torch.polar(torch.ones_like(ph), ph)

    def render(self, ref, R, chunk, owner=None):
        """Band spectra (M, F) complex of projections at rotations R (M, 3, 3);
        with a per-particle reference, ``owner`` (M,) gives the particle of each
        rotation (``_template_clouds``)."""
        import torch
        from ..render import project
        out = []
        scale = float(self.full_box) / self.d
        for s in range(0, R.shape[0], chunk):
            pos, amp = _template_clouds(ref, None if owner is None else owner[s:s + chunk])
            img = project(pos, amp, self.sigma, R[s:s + chunk], self.d, self.apix)
            out.append(self.select(torch.fft.fft2(img, norm='ortho')) * scale)
        return torch.cat(out, 0)


def _template_clouds(ref, owner):
    """(positions, amplitudes) to render: a shared reference (positions (N, 3))
    as it is; a per-particle one (positions (B, N, 3), amplitudes (N,) or
    (B, N)) at the particles ``owner`` (M,) of the templates."""
    pos, amp = ref
    if pos.dim() == 2 or owner is None:
        return pos, amp
    return pos[owner], (amp[owner] if amp.dim() == 2 else amp)


def _ri(z):
    """complex (..., F) -> real (..., 2F)."""
    import torch
    return torch.cat([z.real, z.imag], -1)


def _render_chunk(n_atoms, d, budget=3e6):
    """Templates rendered at once.  Small chunks reuse the allocator's memory:
    2.5e7 floats per chunk cost 1.5x more CPU (page faults) than 3e6."""
    return int(max(16, budget // max(1, n_atoms * d)))


# ---------------------------------------------------------------- search

def search_poses(pset, reference, max_shift=None, coarse_step=10.0, final_step=1.0,
                 n_candidates=5, resolution=None, coarse_resolution=None, batch_size=64,
                 use_ctf=True, noise_sd=None, polish=30, device='cpu', log=None):
    """Global pose search (see the module docstring).

    ``reference``: a ``ReferenceCloud`` or (positions (N, 3) A, amplitudes
    (N,), sigma A).  ``max_shift`` (A, default 5 pixels, as RELION's
    offset range) bounds |t|.  Returns a ``PoseSearchResult``.
    """
    import torch
    from ..geometry import euler_to_matrix
    t_start = time.time()
    log = log or (lambda msg: None)
    dev = torch.device(device)
    pos, pos_t, amp_t, sigma, radius = _reference_tensors(reference, dev)
    if pos_t.dim() != 2:
        raise ValueError('search_poses: one reference cloud (positions (M, 3)); '
                         'per-particle clouds are for refine_poses')
    N, D, apix = len(pset), pset.box, pset.apix
    if max_shift is None:
        max_shift = 5.0 * apix
    max_shift = float(max_shift)
    ctf_all = pset.ctf if (use_ctf and pset.ctf is not None) else None
    stages = plan_stages(D, apix, radius, sigma, ctf_all, coarse_step, final_step,
                         resolution, coarse_resolution, max_shift)
    if noise_sd is None:
        noise_sd = estimate_noise_sd(pset, radius + 2 * sigma)
    noise_sd = max(float(noise_sd), 1e-12)
    K = int(n_candidates)
    bands = [_Band(st, D, dev) for st in stages]
    norm_c = math.sqrt(2.0) / noise_sd  # half-plane sums -> full-plane statistic

    # ---- global stage: templates shared by all particles
    t0 = time.time()
    st0, b0 = stages[0], bands[0]
    E0 = so3_grid(st0['step'])
    R0 = torch.as_tensor(euler_to_matrix(E0[:, 0], E0[:, 1], E0[:, 2]), dtype=torch.float32,
                         device=dev)
    P0 = b0.render((pos_t, amp_t), R0, _render_chunk(len(pos), b0.d))
    P0ri, P0sq = _ri(P0), (P0.real ** 2 + P0.imag ** 2)
    del P0
    S0 = torch.as_tensor(shift_grid(max_shift, st0['shift_step']), dtype=torch.float32,
                         device=dev)
    ph0 = b0.phases(S0)  # (S, F)
    O, S = R0.shape[0], S0.shape[0]
    log('global search: %d orientations (step %.1f deg) x %d shifts, %d px (%.1f A)'
        % (O, st0['step'], S, b0.d, st0['resolution']))
    M = min(O, max(32 * K, 64))
    sep = 2.0 * st0['step']
    rot_out = np.zeros((N, 3, 3))
    t_out = np.zeros((N, 2))
    conf_out = np.zeros(N)
    score_out = np.zeros(N)
    timing = np.zeros(len(stages))
    timing[0] += time.time() - t0
    o_chunk = int(max(256, 3e7 // max(1, batch_size * S)))
    for start in range(0, N, batch_size):
        idx = np.arange(start, min(N, start + batch_size))
        B = len(idx)
        t0 = time.time()
        imgs = torch.as_tensor(np.asarray(pset.images[idx], np.float32), device=dev)
        X_full = torch.fft.fft2(imgs, norm='ortho')
        rows = None if ctf_all is None else ctf_all[idx]
        X0 = b0.images(X_full)
        C0 = b0.ctf(rows)
        Y0 = X0 if C0 is None else X0 * C0
        Y = (Y0[:, None, :] * ph0[None]).reshape(B * S, -1)
        Yri = _ri(Y)
        C2 = torch.ones((B, b0.size), device=dev) if C0 is None else C0 ** 2
        best_sc = torch.full((B, 0), -float('inf'), device=dev)
        best_o = torch.zeros((B, 0), dtype=torch.long, device=dev)
        best_s = torch.zeros((B, 0), dtype=torch.long, device=dev)
        for o1 in range(0, O, o_chunk):
            o2 = min(O, o1 + o_chunk)
            cross = (P0ri[o1:o2] @ Yri.T).reshape(o2 - o1, B, S)
            nrm = (P0sq[o1:o2] @ C2.T).clamp_min(1e-30).sqrt()  # (Oc, B)
            cmax, smax = cross.max(-1)
            cc = (cmax / nrm).T * norm_c  # (B, Oc)
            sc = torch.cat([best_sc, cc], 1)
            oo = torch.cat([best_o, torch.arange(o1, o2, device=dev).expand(B, -1)], 1)
            ss = torch.cat([best_s, smax.T], 1)
            top = sc.topk(min(M, sc.shape[1]), dim=1)
            best_sc, best_o, best_s = top.values, oo.gather(1, top.indices), \
                ss.gather(1, top.indices)
        # non-maximum suppression -> K distinct candidates per particle
        Rm = R0[best_o]  # (B, M, 3, 3)
        ang = geodesic_deg(Rm[:, :, None], Rm[:, None, :])  # (B, M, M)
        Mb = Rm.shape[1]
        sel = torch.zeros((B, Mb), dtype=torch.bool, device=dev)
        cnt = torch.zeros(B, dtype=torch.long, device=dev)
        for m in range(Mb):
            clash = ((ang[:, m, :] < sep) & sel).any(1)
            ok = (cnt < K) & ~clash
            sel[:, m] = ok
            cnt += ok.long()
        prio = sel.float() * (2 * Mb) + torch.arange(Mb, 0, -1, device=dev).float()
        pick = prio.topk(min(K, Mb), dim=1).indices
        R = Rm.gather(1, pick[..., None, None].expand(-1, -1, 3, 3))
        t = S0[best_s.gather(1, pick)]  # (B, K, 2)
        cc = best_sc.gather(1, pick)
        timing[0] += time.time() - t0

        # ---- local stages
        R, t, cc = _local_stages(bands, stages, 1, (pos_t, amp_t), X_full, rows, R, t,
                                 max_shift, norm_c, timing)
        if polish:
            t0 = time.time()
            R, t, cc = _polish(bands[-1], (pos_t, amp_t), X_full, rows, R, t, cc, max_shift,
                               norm_c, iters=polish, lr_deg=stages[-1]['step'] / 4,
                               lr_shift=stages[-1]['shift_step'])
            timing[-1] += time.time() - t0

        # ---- best pose and confidence
        llr = torch.where(torch.isfinite(cc), 0.5 * cc.clamp_min(0) ** 2,
                          torch.full_like(cc, -float('inf')))
        w = torch.softmax(llr, dim=1)
        kb = cc.argmax(1)
        Rb = R[torch.arange(B), kb]
        near = geodesic_deg(R, Rb[:, None]) <= st0['step']
        conf = (w * near.float()).sum(1)
        rot_out[idx] = Rb.double().cpu().numpy()
        t_out[idx] = t[torch.arange(B), kb].double().cpu().numpy()
        conf_out[idx] = conf.double().cpu().numpy()
        score_out[idx] = cc[torch.arange(B), kb].double().cpu().numpy()
        log('  particles %d-%d / %d done (%.1f s)' % (idx[0] + 1, idx[-1] + 1, N,
                                                        time.time() - t_start))
    return _pose_result(rot_out, t_out, conf_out, score_out, noise_sd, stages, timing,
                        t_start)



#: fewest candidate poses refined per reference in ``search_poses_multi``
MIN_CANDIDATES_PER_REFERENCE = 2


def search_poses_multi(pset, references, noise_sd=None, log=None, **settings):
    """``search_poses`` against each of several references (e.g. structures of
    the states of a landscape); each particle keeps the pose of the reference
    with the best score (scores are in noise units whatever the reference, so
    they compare).  ``reference_index`` of the result gives the 0-based choice.

    The ``n_candidates`` of the local refinement are shared among the
    references: each gets ceil(n_candidates / R), at least
    ``MIN_CANDIDATES_PER_REFERENCE``, so that R references cost about one
    search's refinement, not R (measured on 500 particles of a heterogeneous
    AdK set against 3 structures: 2 candidates per reference instead of 5,
    median / mean rotation error 10.48 / 12.95 deg against 10.42 / 12.73, and
    2.5x less time per reference).
    """
    references = list(references)
    if not references:
        raise ValueError('search_poses_multi: no reference given')
    if len(references) > 1:
        k = settings.get('n_candidates')
        if k is None:
            k = inspect.signature(search_poses).parameters['n_candidates'].default
        settings['n_candidates'] = max(MIN_CANDIDATES_PER_REFERENCE,
                                       int(math.ceil(int(k) / len(references))))
    if noise_sd is None:
        pos, _, sigma = _cloud(references[0])
        radius = float(np.max(np.linalg.norm(np.asarray(pos, np.float64), axis=1)))
        noise_sd = estimate_noise_sd(pset, radius + 2 * sigma)
    results = []
    for k, ref in enumerate(references):
        if log and len(references) > 1:
            log('reference %d / %d' % (k + 1, len(references)))
        results.append(search_poses(pset, ref, noise_sd=noise_sd, log=log, **settings))
    best = np.argmax(np.stack([r.score for r in results]), axis=0)
    n = np.arange(len(best))

    def pick(name):
        return np.stack([getattr(r, name) for r in results])[best, n]

    stages = results[0].stages
    for r in results[1:]:
        for st, other in zip(stages, r.stages):
            st['seconds'] = st.get('seconds', 0.0) + other.get('seconds', 0.0)
    return PoseSearchResult(euler=pick('euler'), shifts=pick('shifts'),
                            rotations=pick('rotations'), confidence=pick('confidence'),
                            score=pick('score'), noise_sd=float(noise_sd), stages=stages,
                            seconds=float(sum(r.seconds for r in results)),
                            reference_index=best)


def refine_poses(pset, reference, euler=None, shifts=None, start_step=5.0, final_step=1.0,
                 max_shift=None, resolution=None, batch_size=64, use_ctf=True,
                 noise_sd=None, polish=30, device='cpu', log=None):
    """Local search from given poses (default: the set's own) against the reference.

    ``reference``: a ``ReferenceCloud`` or (positions, amplitudes, sigma) with
    positions (M, 3), one reference for every particle, or (N, M, 3), one
    cloud per particle (e.g. the structure a trained model decodes at each
    particle's latent, ``core.poses.joint``; or its true structure) with
    amplitudes (M,) or (N, M).

    The rotation is refined on 27-point grids ``exp([w]x) R`` with steps
    ``start_step, start_step / 2, ...`` down to ``final_step`` (deg) and the shift
    on 3 x 3 lattices, with the same scores and frequency marching as the local
    stages of ``search_poses``.  An oracle local search when the reference is
    the particle's true structure.  Returns a ``PoseSearchResult`` (confidence
    1: a single candidate).
    """
    import torch
    from ..geometry import euler_to_matrix
    t_start = time.time()
    log = log or (lambda msg: None)
    dev = torch.device(device)
    pos, pos_t, amp_t, sigma, radius = _reference_tensors(reference, dev)
    N, D, apix = len(pset), pset.box, pset.apix
    per_particle = pos_t.dim() == 3
    if per_particle and pos_t.shape[0] != N:
        raise ValueError('refine_poses: %d reference clouds for %d particles'
                         % (pos_t.shape[0], N))
    euler = pset.euler if euler is None else euler
    shifts = pset.shifts if shifts is None else shifts
    if euler is None:
        raise ValueError('refine_poses needs starting poses: use search_poses for '
                         'particles without angles')
    shifts = np.zeros((N, 2)) if shifts is None else np.asarray(shifts, np.float64)
    max_shift = float(5.0 * apix if max_shift is None else max_shift)
    ctf_all = pset.ctf if (use_ctf and pset.ctf is not None) else None
    stages = plan_stages(D, apix, radius, sigma, ctf_all, 2.0 * float(start_step),
                         final_step, resolution, None, max_shift)
    # shift lattice of the first local stage: steps of half a pixel (reach
    # SHIFT_REACH steps), halving after
    for k, st in enumerate(stages):
        st['shift_step'] = 0.5 * apix / 2 ** max(0, k - 1)
    if noise_sd is None:
        noise_sd = estimate_noise_sd(pset, radius + 2 * sigma)
    norm_c = math.sqrt(2.0) / max(float(noise_sd), 1e-12)
    bands = [None] + [_Band(st, D, dev) for st in stages[1:]]
    R_all = euler_to_matrix(*np.asarray(euler, np.float64).T)
    rot_out, t_out, score_out = np.zeros((N, 3, 3)), np.zeros((N, 2)), np.zeros(N)
    timing = np.zeros(len(stages))
    for start in range(0, N, batch_size):
        idx = np.arange(start, min(N, start + batch_size))
        imgs = torch.as_tensor(np.asarray(pset.images[idx], np.float32), device=dev)
        X_full = torch.fft.fft2(imgs, norm='ortho')
        rows = None if ctf_all is None else ctf_all[idx]
        R = torch.as_tensor(R_all[idx], dtype=torch.float32, device=dev)[:, None]
        t = torch.as_tensor(shifts[idx], dtype=torch.float32, device=dev)[:, None]
        ref = (pos_t, amp_t)
        if per_particle:
            ii = torch.as_tensor(idx, device=dev)
            ref = (pos_t[ii], amp_t[ii] if amp_t.dim() == 2 else amp_t)
        R, t, cc = _local_stages(bands, stages, 1, ref, X_full, rows, R, t,
                                 max_shift, norm_c, timing)
        if polish:
            R, t, cc = _polish(bands[-1], ref, X_full, rows, R, t, cc, max_shift,
                               norm_c, iters=polish, lr_deg=stages[-1]['step'] / 4,
                               lr_shift=stages[-1]['shift_step'])
        rot_out[idx] = R[:, 0].double().cpu().numpy()
        t_out[idx] = t[:, 0].double().cpu().numpy()
        score_out[idx] = cc[:, 0].double().cpu().numpy()
        log('  particles %d-%d / %d refined (%.1f s)' % (idx[0] + 1, idx[-1] + 1, N,
                                                           time.time() - t_start))
    # stage 0 (the global grid) is not run here
    return _pose_result(rot_out, t_out, np.ones(N), score_out, noise_sd, stages[1:],
                        timing[1:], t_start)


def _pose_result(rotations, shifts, confidence, score, noise_sd, stages, timing, t_start):
    """``PoseSearchResult`` of the best rotations (N, 3, 3) and shifts (N, 2)
    A; each stage records its ``seconds`` (``timing``)."""
    from ..geometry import matrix_to_euler
    rot, tilt, psi = matrix_to_euler(rotations)
    for st, sec in zip(stages, timing):
        st['seconds'] = float(sec)
    return PoseSearchResult(euler=np.stack([rot, tilt, psi], 1), shifts=shifts,
                            rotations=rotations, confidence=confidence, score=score,
                            noise_sd=float(noise_sd), stages=stages,
                            seconds=time.time() - t_start)


def _cloud(reference):
    if hasattr(reference, 'positions'):
        return reference.positions, reference.amplitudes, float(reference.sigma)
    pos, amp, sigma = reference
    return pos, amp, float(sigma)


def _reference_tensors(reference, dev):
    """(positions, positions tensor, amplitudes tensor, sigma, radius) of the
    reference (``_cloud``), tensors float32 on ``dev``; radius (A): the largest
    distance of a pseudo-atom from the box centre."""
    import torch
    pos, amp, sigma = _cloud(reference)
    pos_t = torch.as_tensor(np.asarray(pos, np.float32), device=dev)
    amp_t = torch.as_tensor(np.asarray(amp, np.float32), device=dev)
    radius = float(np.max(np.linalg.norm(np.asarray(pos, np.float64), axis=-1)))
    return pos, pos_t, amp_t, sigma, radius


def _local_stages(bands, stages, first, ref, X_full, rows, R, t, max_shift, norm_c,
                  timing, max_iter=4, prune=PRUNE_NATS):
    """Refine candidates R (B, K, 3, 3), t (B, K, 2) through ``stages[first:]``.

    At each stage a candidate moves to the best of its 27 x 25 neighbours
    (rotation offsets x shift lattice) until it stays put (a pattern search;
    at most ``max_iter`` moves per stage; only the candidates that moved are
    evaluated again).  After each stage, candidates whose log-likelihood ratio
    is more than ``prune`` nats below their particle's best are dropped (their
    posterior weight is below exp(-prune)).  Returns (R, t, cc (B, K) with
    -inf for dropped candidates) at the last stage."""
    import torch
    B, Kb = R.shape[:2]
    dev = R.device
    Q = B * Kb
    R, t = R.reshape(Q, 3, 3).clone(), t.reshape(Q, 2).clone()
    pidx = torch.arange(B, device=dev).repeat_interleave(Kb)
    cc = torch.zeros(Q, device=dev)
    alive = torch.ones(Q, dtype=torch.bool, device=dev)
    for si in range(first, len(stages)):
        t0 = time.time()
        st, bd = stages[si], bands[si]
        off = local_offsets(st['step'], device=dev)  # (J, 3, 3)
        J = off.shape[0]
        h = st['shift_step']
        g = torch.arange(-SHIFT_REACH, SHIFT_REACH + 1, device=dev, dtype=torch.float32) * h
        sg = torch.stack(torch.meshgrid(g, g, indexing='xy'), -1).reshape(-1, 2)
        S = sg.shape[0]
        Xb = bd.images(X_full)
        Cb = bd.ctf(rows)
        Yb = Xb if Cb is None else Xb * Cb  # (B, F)
        C2 = torch.ones_like(Yb.real) if Cb is None else Cb ** 2
        F = bd.size
        active = torch.nonzero(alive).squeeze(1)
        for it in range(max_iter):
            q = active
            n = len(q)
            Rc = (off[None] @ R[q][:, None]).reshape(n * J, 3, 3)
            owner = pidx[q].repeat_interleave(J) if ref[0].dim() == 3 else None
            P = bd.render(ref, Rc, _render_chunk(ref[0].shape[-2], bd.d),
                          owner).reshape(n, J, F)
            sh = t[q][:, None, :] + sg[None]  # (n, S, 2)
            if max_shift > 0:
                rr = sh.norm(dim=-1, keepdim=True)
                sh = torch.where(rr > max_shift, sh * (max_shift / rr.clamp_min(1e-9)), sh)
            else:
                sh = torch.zeros_like(sh)
            Yk = Yb[pidx[q]][:, None, :] * bd.phases(sh)  # (n, S, F)
            cross = torch.bmm(_ri(P), _ri(Yk).transpose(1, 2))  # (n, J, S)
            nrm = torch.einsum('njf,nf->nj', P.real ** 2 + P.imag ** 2,
                               C2[pidx[q]]).clamp_min(1e-30).sqrt()
            score = cross / nrm[..., None] * norm_c
            best, arg = score.reshape(n, J * S).max(-1)
            j, s = arg // S, arg % S
            R[q] = Rc.reshape(n, J, 3, 3)[torch.arange(n, device=dev), j]
            t[q] = sh[torch.arange(n, device=dev), s]
            cc[q] = best
            moved = (j != J // 2) | (s != S // 2)
            active = q[moved]
            if len(active) == 0:
                break
        llr = 0.5 * cc.clamp_min(0) ** 2
        llr = torch.where(alive, llr, torch.full_like(llr, -float('inf'))).reshape(B, Kb)
        alive &= (llr >= llr.max(1, keepdim=True).values - prune).reshape(Q)
        timing[si] += time.time() - t0
    cc = torch.where(alive, cc, torch.full_like(cc, -float('inf')))
    return R.reshape(B, Kb, 3, 3), t.reshape(B, Kb, 2), cc.reshape(B, Kb)


def _polish(band, ref, X_full, rows, R, t, cc_in, max_shift, norm_c, iters=30, lr_deg=0.5,
            lr_shift=0.25, chunk=None):
    """Gradient ascent of cc over a small rotation ``exp([w]x) R`` and shift for
    each candidate R (B, K, 3, 3), t (B, K, 2) with a finite score ``cc_in``
    at ``band`` (Adam, cosine-decayed steps of ``lr_deg`` degrees / ``lr_shift``
    A; the best point visited is kept): follows ridges of the score that a
    grid search crosses at an angle.  Returns (R, t, cc (B, K))."""
    import torch
    from ..models.pose import axis_angle_to_matrix
    from ..render import project
    B, Kb = R.shape[:2]
    dev = R.device
    keep = torch.nonzero(torch.isfinite(cc_in.reshape(-1))).squeeze(1)
    Q = len(keep)
    R0 = R.reshape(B * Kb, 3, 3)[keep].detach()
    t0 = t.reshape(B * Kb, 2)[keep].detach()
    pidx = torch.arange(B, device=dev).repeat_interleave(Kb)[keep]
    Yb = band.images(X_full)
    Cb = band.ctf(rows)
    Yb = Yb if Cb is None else Yb * Cb
    C2 = torch.ones_like(Yb.real) if Cb is None else Cb ** 2
    Yq, C2q = Yb[pidx], C2[pidx]
    w = torch.zeros((Q, 3), device=dev, requires_grad=True)
    dt = torch.zeros((Q, 2), device=dev, requires_grad=True)
    opt = torch.optim.Adam([dict(params=[w], lr=lr_deg), dict(params=[dt], lr=lr_shift)])
    chunk = chunk or _render_chunk(ref[0].shape[-2], band.d)
    scale = float(band.full_box) / band.d
    deg = math.pi / 180.0

    def score(q, grad):
        Rq = axis_angle_to_matrix(w[q] * deg) @ R0[q]
        tq = t0[q] + dt[q]
        with torch.set_grad_enabled(grad):
            pos, amp = _template_clouds(ref, pidx[q])
            img = project(pos, amp, band.sigma, Rq, band.d, band.apix)
            P = band.select(torch.fft.fft2(img, norm='ortho')) * scale
            cross = (_ri(P) * _ri(Yq[q] * band.phases(tq))).sum(-1)
            nrm = ((P.real ** 2 + P.imag ** 2) * C2q[q]).sum(-1).clamp_min(1e-30).sqrt()
            return cross / nrm * norm_c

    best_cc = torch.full((Q,), -float('inf'), device=dev)
    best_w, best_dt = torch.zeros_like(w), torch.zeros_like(dt)
    for it in range(iters + 1):
        for g in range(2):
            base = (lr_deg, lr_shift)[g]
            opt.param_groups[g]['lr'] = base * 0.5 * (1 + math.cos(math.pi * it / iters))
        opt.zero_grad(set_to_none=True)
        for c0 in range(0, Q, chunk):
            q = torch.arange(c0, min(Q, c0 + chunk), device=dev)
            cc = score(q, it < iters)
            with torch.no_grad():  # keep the best point seen (Adam may overshoot)
                better = cc > best_cc[q]
                best_cc[q] = torch.where(better, cc, best_cc[q])
                best_w[q] = torch.where(better[:, None], w[q], best_w[q])
                best_dt[q] = torch.where(better[:, None], dt[q], best_dt[q])
            if it < iters:
                (-cc.sum()).backward()
        if it < iters:
            opt.step()
            if max_shift > 0:
                with torch.no_grad():
                    tt = t0 + dt
                    rr = tt.norm(dim=-1, keepdim=True)
                    dt.copy_(torch.where(rr > max_shift, tt * (max_shift / rr) - t0, dt))
    with torch.no_grad():
        R1, t1 = R.reshape(B * Kb, 3, 3).clone(), t.reshape(B * Kb, 2).clone()
        cc1 = cc_in.reshape(-1).clone()
        R1[keep] = axis_angle_to_matrix(best_w * deg) @ R0
        t1[keep] = t0 + best_dt
        cc1[keep] = best_cc
    return R1.reshape(B, Kb, 3, 3), t1.reshape(B, Kb, 2), cc1.reshape(B, Kb)


def posed_particles(pset, result):
    """Copy of ``pset`` with the found poses and the confidence / score columns."""
    import pandas as pd
    out = pset.subset(np.arange(len(pset)))
    out.euler = np.asarray(result.euler, dtype=np.float64)
    out.shifts = np.asarray(result.shifts, dtype=np.float64)
    meta = out.metadata.copy() if out.metadata is not None else pd.DataFrame(
        index=range(len(pset)))
    meta[CONFIDENCE_LABEL] = np.asarray(result.confidence, dtype=np.float64)
    meta[SCORE_LABEL] = np.asarray(result.score, dtype=np.float64)
    if result.reference_index is not None:
        meta[REFERENCE_LABEL] = np.asarray(result.reference_index, dtype=np.int64) + 1
    out.metadata = meta
    return out

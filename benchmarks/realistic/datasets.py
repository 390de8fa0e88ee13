"""Particle sets of the realistic benchmark, and their oracle bound.

Everything here uses ``simulator`` only (no ``continuousflex_geodl``).

One *base* per (box, seed) draws, for N particles: true orientations
(uniform on SO(3)), true in-plane shifts, CTF parameters, a standard-normal
noise image per particle, consensus-refinement-like pose errors, and the
frame of each particle under each population law.  The sets built on a base
share these draws (so the sets differ only in what their name says):

* population ``three_state``: three states along the path with populations
  0.40 / 0.20 / 0.40 (the middle one minor), centred at path coordinates
  0.12 / 0.50 / 0.88, each state a spread of frames around its centre
  (weights ``exp(-(c_f - c_s)^2 / (2 * 0.05^2))`` over the frames' path
  coordinates ``c_f``); population ``uniform``: every frame equally likely;
* SNR 0.1 or 0.03: noise variance = mean clean-image variance / SNR;
* poses ``exact`` (the star holds the true poses) or ``noisy`` (the star holds
  poses with errors: a random rotation of median angle ~2.75 deg and an
  in-plane shift error of median ~1.3 A; the images are the same as the
  exact set's).

Files of a set ``<root>/<name>/``: ``particles.star`` (RELION 3.1; its images
in ``<root>/Stacks/<stack>.mrcs``, found by RELION-style parent lookup),
``ground_truth.npz``, ``reference_closed.pdb`` (closed end state, all heavy
atoms), ``consensus.mrc`` (population-weighted mean potential, no CTF, same
grid), ``set.json`` (summary); ``oracle.json`` once the oracle has run.
"""
import json
import os
import time

import numpy as np

import simulator as S

POPULATIONS = {
    'three_state': dict(weights=(0.40, 0.20, 0.40), centres=(0.12, 0.50, 0.88), sd=0.05),
    'uniform': None,
}
ROT_ERR_MEDIAN_DEG = 2.75
SHIFT_ERR_MEDIAN_A = 1.3
BFACTOR = 20.0
PAD = 2


def set_name(pop, box, snr, poses):
    return 'adk_%s_b%d_snr%g_%s' % (pop, box, snr, poses)


def stack_name(pop, box, snr):
    return 'adk_%s_b%d_snr%g.mrcs' % (pop, box, snr)


def frame_law(pop, path_coord):
    """(p_f (F,), q_sf (S, F) per-state frame law or None, state weights or None)."""
    spec = POPULATIONS[pop]
    F = len(path_coord)
    if spec is None:
        return np.full(F, 1.0 / F), None, None
    q = np.exp(-(path_coord[None] - np.asarray(spec['centres'])[:, None]) ** 2
               / (2 * spec['sd'] ** 2))
    q /= q.sum(1, keepdims=True)
    w = np.asarray(spec['weights'])
    return w @ q, q, w


def make_base(n, box, apix, seed, path_coord):
    """All random draws of a base (dict of arrays)."""
    rng = np.random.default_rng(seed)
    euler = S.uniform_eulers(n, rng)
    shifts = np.clip(rng.normal(0, 1.5, (n, 2)), -5, 5)
    dfu = rng.uniform(10000, 25000, n)
    ctf = dict(dfu=dfu, dfv=dfu - rng.uniform(0, 800, n), dfang=rng.uniform(0, 180, n),
               kv=np.full(n, 300.0), cs=np.full(n, 2.7), w=np.full(n, 0.1),
               phase_shift=np.zeros(n))
    # pose errors: isotropic rotation vector (median |v| = 1.5382 sd for 3 dof),
    # isotropic 2D shift error (median = 1.1774 sd for 2 dof)
    rv = rng.normal(0, np.deg2rad(ROT_ERR_MEDIAN_DEG) / 1.5382, (n, 3))
    R_true = S.euler_matrix(*euler.T)
    R_obs = S.axis_angle_matrix(rv) @ R_true
    euler_obs = np.stack(S.matrix_to_euler(R_obs), 1)
    shifts_obs = shifts + rng.normal(0, SHIFT_ERR_MEDIAN_A / 1.1774, (n, 2))
    frames, states = {}, {}
    for pop in POPULATIONS:
        p, q, w = frame_law(pop, path_coord)
        if q is None:
            frames[pop] = rng.choice(len(path_coord), n, p=p)
            states[pop] = np.full(n, -1)
        else:
            st = rng.choice(len(w), n, p=w)
            frames[pop] = np.array([rng.choice(len(path_coord), p=q[s]) for s in st])
            states[pop] = st
    noise_seed = int(rng.integers(2 ** 31))
    return dict(euler=euler, shifts=shifts, ctf=ctf, euler_obs=euler_obs, shifts_obs=shifts_obs,
                rotvec_err=rv, shift_err_vec=shifts_obs - shifts,
                rot_err_deg=S.rotation_angle_deg(R_obs, R_true),
                shift_err=np.linalg.norm(shifts_obs - shifts, axis=1),
                frames=frames, states=states, noise_seed=noise_seed, box=box, apix=apix)


def noise_images(seed, start, stop, box):
    """Standard-normal noise of particles [start, stop): reproducible per particle."""
    out = np.empty((stop - start, box, box))
    for i in range(start, stop):
        out[i - start] = np.random.default_rng([seed, i]).standard_normal((box, box))
    return out


def _ctf_slice(ctf, idx):
    return {k: v[idx] for k, v in ctf.items()}


def render_frames(adk, terms, base, idx, frames, dtype='float32', fast=False):
    """Clean images of particles ``idx`` in frames ``frames`` (len(idx),) -> (n, D, D).

    ``fast``: the simulator's nearest-point weight table (the oracle's path;
    ~1e-5 relative difference to the interpolated table that made the data).
    """
    R = S.euler_matrix(*base['euler'][idx].T)
    pos = adk['coords'][frames]
    return S.clean_images(pos, terms, R, base['shifts'][idx], _ctf_slice(base['ctf'], idx),
                          base['box'], base['apix'], pad=PAD, dtype=dtype, fast=fast)


def make_sets(root, n=2000, box=64, apix=2.0, snrs=(0.1, 0.03), seed=0, pops=None,
              log=print, chunk=100):
    """Write every set of one base under ``root``; returns the list of set names."""
    adk = S.load_adk()
    pc = adk['path_coord']
    terms = S.AtomTerms(adk['elements'], adk['n_hydrogens'], BFACTOR)
    base = make_base(n, box, apix, seed, pc)
    pops = list(pops or POPULATIONS)
    os.makedirs(os.path.join(root, 'Stacks'), exist_ok=True)
    names = []
    t0 = time.time()
    for pop in pops:
        clean = np.empty((n, box, box), dtype=np.float64)
        for s in range(0, n, chunk):
            idx = np.arange(s, min(n, s + chunk))
            clean[idx] = render_frames(adk, terms, base, idx, base['frames'][pop][idx])
        sig_var = float(clean.var(axis=(1, 2)).mean())
        p_f, q_sf, w_s = frame_law(pop, pc)
        # consensus map: population-weighted mean potential of the frames
        vol = np.zeros((box, box, box))
        for f in np.nonzero(p_f > 1e-8)[0]:
            vol += p_f[f] * S.potential_volume(adk['coords'][f], terms, box, apix)
        for snr in snrs:
            sigma = np.sqrt(sig_var / snr)
            imgs = np.empty((n, box, box), dtype=np.float32)
            for s in range(0, n, 500):
                e = min(n, s + 500)
                imgs[s:e] = clean[s:e] + sigma * noise_images(base['noise_seed'], s, e, box)
            stack = stack_name(pop, box, snr)
            S.write_mrc(os.path.join(root, 'Stacks', stack), imgs, apix)
            for poses in ('exact', 'noisy'):
                name = set_name(pop, box, snr, poses)
                d = os.path.join(root, name)
                os.makedirs(d, exist_ok=True)
                eu = base['euler'] if poses == 'exact' else base['euler_obs']
                sh = base['shifts'] if poses == 'exact' else base['shifts_obs']
                S.write_star(os.path.join(d, 'particles.star'), 'Stacks/' + stack, eu, sh,
                             base['ctf'], apix, box)
                fr = base['frames'][pop]
                np.savez_compressed(
                    os.path.join(d, 'ground_truth.npz'),
                    frame=fr, path_coord=pc[fr], trajectory_frame=adk['frame_index'][fr],
                    state=base['states'][pop], euler_true=base['euler'], shifts_true=base['shifts'],
                    euler_star=eu, shifts_star=sh,
                    **{'ctf_' + k: v for k, v in base['ctf'].items()},
                    frame_path_coord=pc, frame_prob=p_f,
                    state_frame_prob=q_sf if q_sf is not None else np.zeros((0, len(pc))),
                    state_weights=w_s if w_s is not None else np.zeros(0),
                    state_centres=np.asarray(POPULATIONS[pop]['centres'])
                    if POPULATIONS[pop] else np.zeros(0),
                    noise_sigma=sigma, signal_var=sig_var, snr=snr, box=box, apix=apix,
                    bfactor=BFACTOR, pad=PAD)
                S.write_pdb(os.path.join(d, 'reference_closed.pdb'), adk['coords'][0],
                            adk['elements'], adk['atom_names'], adk['res_names'], adk['res_ids'])
                S.write_mrc(os.path.join(d, 'consensus.mrc'), vol, apix)
                st = base['states'][pop]
                info = dict(name=name, population=pop, box=box, apix=apix, snr=snr, poses=poses,
                            n_particles=n, n_frames=len(pc), seed=seed, noise_sigma=sigma,
                            signal_var=sig_var, bfactor=BFACTOR, ctf_pad=PAD,
                            stack='Stacks/' + stack, n_atoms=int(len(adk['elements'])),
                            path_smoothing_sd_frames=float(adk.get('smooth_sd_frames', 0.0)),
                            state_counts=np.bincount(st[st >= 0]).tolist() if pop != 'uniform'
                            else [],
                            pose_error=None if poses == 'exact' else dict(
                                rotation_median_deg=float(np.median(base['rot_err_deg'])),
                                shift_median_A=float(np.median(base['shift_err']))))
                with open(os.path.join(d, 'set.json'), 'w') as f:
                    json.dump(info, f, indent=1)
                names.append(name)
                log('wrote %s (%.0f s)' % (name, time.time() - t0))
    return names


def _read_stack(path):
    import mrcfile
    with mrcfile.mmap(path, mode='r', permissive=True) as m:
        return np.asarray(m.data, dtype=np.float64)


def oracle(root, box=64, apix=2.0, n=2000, seed=0, snrs=(0.1, 0.03), pops=None, log=print,
           chunk=25, knn_k=10):
    """Oracle bound of every set of one base: for each particle the posterior over
    the F true frames, given the true poses, CTF and noise level (Gaussian
    likelihood of the stored image) and the true frame law as prior; its
    posterior-mean path coordinate is scored like a latent (|Spearman|, kNN
    error with ``continuousflex_geodl.core.metrics``).  Writes oracle.json in
    each set folder (the noisy-pose set gets the exact set's oracle: the
    oracle knows the true poses and the images are the same)."""
    from continuousflex_geodl.core import metrics  # scoring only
    adk = S.load_adk()
    pc = adk['path_coord']
    F = len(pc)
    terms = S.AtomTerms(adk['elements'], adk['n_hydrogens'], BFACTOR)
    base = make_base(n, box, apix, seed, pc)
    pops = list(pops or POPULATIONS)
    keys = [(p, s) for p in pops for s in snrs]
    stacks, sig = {}, {}
    for p, s in keys:
        stacks[p, s] = _read_stack(os.path.join(root, 'Stacks', stack_name(p, box, s)))
        with np.load(os.path.join(root, set_name(p, box, s, 'exact'), 'ground_truth.npz')) as g:
            sig[p, s] = float(g['noise_sigma'])
    d2 = {k: np.zeros((n, F)) for k in keys}
    t0 = time.time()
    for s0 in range(0, n, chunk):
        idx = np.arange(s0, min(n, s0 + chunk))
        rep = np.repeat(idx, F)
        fr = np.tile(np.arange(F), len(idx))
        clean = render_frames(adk, terms, base, rep, fr, fast=True).reshape(len(idx), F, box,
                                                                             box)
        for k in keys:
            diff = stacks[k][idx][:, None] - clean
            d2[k][idx] = (diff ** 2).sum((2, 3))
        if s0 == 0 or (s0 // chunk) % 4 == 0:
            log('oracle b%d: %d/%d particles, %.0f s' % (box, idx[-1] + 1, n, time.time() - t0))
    out = {}
    for p, s in keys:
        p_f, _, _ = frame_law(p, pc)
        loglik = -d2[p, s] / (2 * sig[p, s] ** 2)
        logpost = loglik + np.log(p_f)[None]
        w = np.exp(logpost - logpost.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        post_mean = w @ pc
        true_f = base['frames'][p]
        u = pc[true_f]
        map_f = np.argmax(logpost, 1)
        ml_f = np.argmax(loglik, 1)
        res = dict(
            spearman_posterior_mean=float(metrics.latent_spearman_pc1(post_mean, u)),
            knn_error_posterior_mean=float(metrics.knn_neighbourhood_error(post_mean, u, knn_k)),
            spearman_ml=float(metrics.latent_spearman_pc1(pc[ml_f], u)),
            map_frame_accuracy=float(np.mean(map_f == true_f)),
            map_frame_within1=float(np.mean(np.abs(map_f - true_f) <= 1)),
            posterior_mean_abs_error=float(np.mean(np.abs(post_mean - u))),
            n_frames=F, knn_k=knn_k, seconds=time.time() - t0)
        st = base['states'][p]
        if (st >= 0).any():
            _, q, wts = frame_law(p, pc)
            # posterior over states: sum over frames of the state's frame law
            ps = np.exp(loglik - loglik.max(1, keepdims=True)) @ (q.T * wts[None])
            ps /= ps.sum(1, keepdims=True)
            res['state_accuracy'] = float(np.mean(np.argmax(ps, 1) == st))
            res['state_population_from_posterior'] = ps.mean(0).tolist()
        np.save(os.path.join(root, set_name(p, box, s, 'exact'), 'oracle_posterior_mean.npy'),
                post_mean)
        for poses in ('exact', 'noisy'):
            with open(os.path.join(root, set_name(p, box, s, poses), 'oracle.json'), 'w') as f:
                json.dump(res, f, indent=1)
        out[set_name(p, box, s, 'exact')] = res
        log('oracle %s: |Spearman| %.4f, kNN %.4f' % (set_name(p, box, s, 'exact'),
                                                      res['spearman_posterior_mean'],
                                                      res['knn_error_posterior_mean']))
    return out

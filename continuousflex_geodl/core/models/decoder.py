"""Point-cloud decoders: latent z -> per-pseudo-atom displacements (A).

``PointDecoder`` (default, free-form) is a point neural network over the
reference cloud:

1. per-atom features from Fourier features of the reference position;
2. ``n_conv`` kernel point convolutions (message passing on the k-nearest-
   neighbour graph of the reference, Gaussian distance kernel, relative
   positions in the messages, dMaSIF-like) -- independent of z, computed once
   per forward;
3. conditioning on z, either ``'film'``: a per-atom MLP on the point
   features modulated by a linear map of z (FiLM), then a linear head; or
   ``'lowrank'`` (~10x cheaper): the point features give H displacement
   fields ``phi_h`` (N, 3) and an MLP of z their coefficients,
   ``d = sum_h psi_h(z) phi_h``; or ``'segments'`` (default): linear-blend
   skinning of S soft segments -- each atom belongs softly to segments
   (softmax of a Gaussian of its distance to k-means centres of the
   reference plus a learned point-network correction) and each segment
   moves rigidly with a rotation and translation given by an MLP of z,
   ``y_j = sum_k w_jk (R_k(z) (x_j - c_k) + c_k + t_k(z))``, plus a
   low-rank free-form residual field (``rank`` > 0).  Domain motions, the
   common case, are then a few parameters, which the images determine
   much faster than a free field;
4. the output (3 displacement components, optionally a log amplitude
   change) is zero-initialised so that every z starts at the reference;
5. a fixed Gaussian smoothing of the displacement field over the graph
   (no tearing at the scale of the neighbourhood).

``AmplitudeHead`` (``learn_amplitudes``, compositional heterogeneity) adds a
per-pseudo-atom amplitude in [0, 1] that depends on z: ``a_j(z) =
sigmoid(b0 + sum_r phi_r(h_j) psi_r(z))``, a low-rank product of fields on
the decoder's point features ``h`` (smoothed over the graph like the
displacements, so that neighbouring atoms fade together) and an MLP of z.
``psi``'s last layer is zero-initialised, so every atom starts at
``sigmoid(b0) = AMPLITUDE_INIT`` (0.982) for every z; the renderer
multiplies each Gaussian's weight by ``a_j(z)``.  ``PointDecoder.forward_all``
returns it as a third output.

``ModeDecoder`` restricts displacements to an elastic-network normal-mode
basis of the reference (DeepHEMNMA bridge): ``d = sum_m c_m(z) v_m`` with
``c = MLP(z)``.

Both take z (B, K) and return ``(displacements (B, N, 3), log_amp (B, N) or
None)``.
"""
import math

import numpy as np
import torch
import torch.nn as nn

from ..cloud import knn_graph, weighted_kmeans
from .pose import axis_angle_to_matrix


def fourier_features(x, n_freq):
    """(N, 3) normalised positions -> (N, 3 + 6 n_freq) features."""
    feats = [x]
    for f in range(n_freq):
        w = (2.0 ** f) * math.pi
        feats += [torch.sin(w * x), torch.cos(w * x)]
    return torch.cat(feats, -1)


class KernelConv(nn.Module):
    """Point convolution on a fixed kNN graph with a Gaussian distance kernel.

    ``h'_j = h_j + act(sum_i w_ij (W h_i + P (x_i - x_j) / rho))`` with
    ``w_ij = exp(-|x_i - x_j|^2 / 2 rho^2)`` normalised over the neighbours.
    The messages are linear, so the sum is computed as a sparse (N, N)
    product ``Wg @ (W h)`` plus ``P (sum_i w_ij (x_i - x_j) / rho)``.
    """

    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.rel = nn.Linear(3, width, bias=False)
        self.act = nn.SiLU()

    def forward(self, h, graph, rel_mean):
        # h (N, H); graph: sparse (N, N) kernel weights; rel_mean (N, 3)
        return h + self.act(torch.sparse.mm(graph, self.lin(h)) + self.rel(rel_mean))


class _GraphMixin:
    def _init_graph(self, reference, k, smooth_rho=None):
        ref = np.asarray(reference, dtype=np.float64)
        n = len(ref)
        nbr = knn_graph(ref, k)
        rel = ref[nbr] - ref[:, None, :]
        dist = np.sqrt((rel ** 2).sum(-1))
        rho = float(np.median(dist[:, -1])) if n > 1 else 1.0
        rho = max(rho, 1e-3)
        w = np.exp(-dist ** 2 / (2 * rho ** 2))
        w /= w.sum(1, keepdims=True)
        self.rho = rho
        self.register_buffer('nbr', torch.as_tensor(nbr, dtype=torch.long))
        self.register_buffer('w', torch.as_tensor(w, dtype=torch.float32))
        self.register_buffer('rel_mean', torch.as_tensor((w[..., None] * rel / rho).sum(1),
                                                         dtype=torch.float32))
        self._graph = None
        srho = rho if smooth_rho is None else smooth_rho
        ws = np.exp(-dist ** 2 / (2 * srho ** 2))
        ws /= ws.sum(1, keepdims=True)
        self.register_buffer('w_smooth', torch.as_tensor(ws, dtype=torch.float32))

    def graph(self):
        """Sparse (N, N) kernel weights ``w_ij`` (row j: its neighbours i)."""
        g = self._graph
        if g is None or g.device != self.w.device:
            n, k = self.nbr.shape
            rows = torch.arange(n, device=self.w.device).repeat_interleave(k)
            idx = torch.stack([rows, self.nbr.reshape(-1)])
            g = torch.sparse_coo_tensor(idx, self.w.reshape(-1), (n, n),
                                        check_invariants=True).coalesce()
            self._graph = g
        return g

    def smooth(self, d):
        """Gaussian neighbourhood average of a per-atom field (B, N, C)."""
        if self.smooth_steps <= 0:
            return d
        for _ in range(self.smooth_steps):
            d = (d[:, self.nbr, :] * self.w_smooth[None, :, :, None]).sum(2)
        return d


#: logit of every learned amplitude at initialisation: sigmoid(4) = 0.982
AMPLITUDE_LOGIT0 = 4.0
AMPLITUDE_INIT = 1.0 / (1.0 + math.exp(-AMPLITUDE_LOGIT0))


class AmplitudeHead(nn.Module):
    """Per-atom amplitudes in [0, 1] from point features h (N, H) and z (B, K):
    ``sigmoid(AMPLITUDE_LOGIT0 + smooth(phi(h)) @ psi(z))`` (module docstring)."""

    def __init__(self, width, zdim, rank=8):
        super().__init__()
        self.rank = int(rank)
        self.fields = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                    nn.Linear(width, self.rank))
        self.coef = nn.Sequential(nn.Linear(int(zdim), width), nn.SiLU(),
                                  nn.Linear(width, width), nn.SiLU(),
                                  nn.Linear(width, self.rank))
        nn.init.zeros_(self.coef[-1].weight)
        nn.init.zeros_(self.coef[-1].bias)

    def forward(self, h, z, smooth=None):
        phi = self.fields(h)  # (N, R)
        if smooth is not None:
            phi = smooth(phi.unsqueeze(0))[0]
        logit = AMPLITUDE_LOGIT0 + self.coef(z) @ phi.t()  # (B, N)
        return torch.sigmoid(logit)


class PointDecoder(nn.Module, _GraphMixin):
    """Free-form point-network decoder (see module docstring)."""

    def __init__(self, reference, zdim, width=64, n_conv=2, k=16, n_freq=3,
                 amplitudes=False, smooth_steps=1, conditioning='segments', rank=32,
                 n_segments=16, seed=0, learn_amplitudes=False):
        super().__init__()
        if conditioning not in ('film', 'lowrank', 'segments'):
            raise ValueError("Unknown decoder conditioning '%s': use 'segments', 'lowrank' "
                             "or 'film'." % conditioning)
        self.conditioning = conditioning
        if conditioning == 'lowrank' and int(rank) <= 0:
            raise ValueError("The 'lowrank' decoder needs rank > 0.")
        ref = torch.as_tensor(np.asarray(reference), dtype=torch.float32)
        self.zdim = int(zdim)
        self.amplitudes = bool(amplitudes)
        self.smooth_steps = int(smooth_steps)
        centre = ref.mean(0)
        radius = float(torch.sqrt(((ref - centre) ** 2).sum(1).mean()).clamp_min(1e-3))
        self.register_buffer('xn', (ref - centre) / (2.0 * radius))
        self._init_graph(ref.numpy(), k)
        fin = 3 + 6 * n_freq
        self.n_freq = int(n_freq)
        self.embed = nn.Sequential(nn.Linear(fin, width), nn.SiLU(),
                                   nn.Linear(width, width))
        self.convs = nn.ModuleList([KernelConv(width) for _ in range(n_conv)])
        nout = 4 if self.amplitudes else 3
        self.nout = nout
        if conditioning == 'film':
            self.zmap = nn.Linear(self.zdim, 2 * width)
            self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                     nn.Linear(width, width), nn.SiLU())
            self.head = nn.Linear(width, nout)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if conditioning == 'segments':
            S = int(min(n_segments, len(ref)))
            c, _ = weighted_kmeans(ref.numpy(), np.ones(len(ref)), S, seed=seed, trials=1)
            S = len(c)
            self.n_segments = S
            c = torch.as_tensor(c, dtype=torch.float32)
            d2 = ((ref[:, None, :] - c[None]) ** 2).sum(-1)  # (N, S)
            tau2 = float(d2.min(1).values.mean().clamp_min(1e-6))
            self.register_buffer('seg_centres', c)
            self.register_buffer('seg_logits0', -d2 / (2 * tau2))
            self.seg_head = nn.Sequential(nn.SiLU(), nn.Linear(width, S))
            nn.init.zeros_(self.seg_head[-1].weight)
            nn.init.zeros_(self.seg_head[-1].bias)
            self.seg_motion = nn.Sequential(nn.Linear(self.zdim, width), nn.SiLU(),
                                            nn.Linear(width, width), nn.SiLU(),
                                            nn.Linear(width, 6 * S))
            nn.init.zeros_(self.seg_motion[-1].weight)
            nn.init.zeros_(self.seg_motion[-1].bias)
            self.register_buffer('ref', ref)
        if conditioning in ('lowrank', 'segments') and int(rank) > 0:
            self.rank = int(rank)
            self.fields = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                        nn.Linear(width, nout * self.rank))
            self.coef = nn.Sequential(nn.Linear(self.zdim, width), nn.SiLU(),
                                      nn.Linear(width, width), nn.SiLU(),
                                      nn.Linear(width, self.rank))
            nn.init.zeros_(self.coef[-1].weight)
            nn.init.zeros_(self.coef[-1].bias)
        else:
            self.rank = 0
        self.amplitude_head = None
        if learn_amplitudes:  # own random stream: the other weights stay as without it
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) + 7919)
                self.amplitude_head = AmplitudeHead(width, self.zdim)

    def point_features(self):
        h = self.embed(fourier_features(self.xn, self.n_freq))
        if len(self.convs):
            g = self.graph()
            for conv in self.convs:
                h = conv(h, g, self.rel_mean)
        return h  # (N, H)

    def forward(self, z):
        """(displacements (B, N, 3), log amplitude change (B, N) or None)."""
        return self.forward_all(z)[:2]

    def forward_all(self, z):
        """``forward`` plus the learned amplitudes in [0, 1] (B, N), or None
        without ``learn_amplitudes``."""
        h = self.point_features()
        disp, log_amp = self._displacements(h, z)
        amp = None if self.amplitude_head is None else self.amplitude_head(h, z, self.smooth)
        return disp, log_amp, amp

    def _displacements(self, h, z):
        if self.conditioning == 'film':
            g, b = self.zmap(z).chunk(2, dim=-1)  # (B, H) each
            u = h.unsqueeze(0) * (1 + g.unsqueeze(1)) + b.unsqueeze(1)
            out = self.head(self.mlp(u))  # (B, N, 3|4)
            out = self.smooth(out)
            disp = out[..., :3]
            log_amp = out[..., 3] if self.amplitudes else None
            return disp, log_amp
        out = 0.0
        if self.rank:
            phi = self.fields(h).view(-1, self.nout, self.rank)  # (N, C, H)
            phi = self.smooth(phi.reshape(1, -1, self.nout * self.rank)).view_as(phi)
            out = torch.einsum('nch,bh->bnc', phi, self.coef(z))
        if self.conditioning == 'segments':
            B, S = z.shape[0], self.n_segments
            w = torch.softmax(self.seg_logits0 + self.seg_head(h), dim=-1)  # (N, S)
            m = self.seg_motion(z).view(B, S, 6)
            R = axis_angle_to_matrix(0.1 * m[..., :3].reshape(-1, 3)).view(B, S, 3, 3)
            # y_j = sum_k w_jk (R_k (x_j - c_k) + c_k + t_k)
            #     = (sum_k w_jk R_k) x_j + sum_k w_jk (c_k + t_k - R_k c_k)
            A = (w @ R.reshape(B, S, 9).transpose(0, 1).reshape(S, B * 9))  # (N, B*9)
            A = A.view(-1, B, 3, 3).transpose(0, 1)  # (B, N, 3, 3)
            c = self.seg_centres
            offs = c + m[..., 3:] - torch.einsum('bsij,sj->bsi', R, c)  # (B, S, 3)
            y = torch.einsum('bnij,nj->bni', A, self.ref) + torch.einsum('ns,bsi->bni', w, offs)
            seg = y - self.ref
            if self.nout == 4:
                seg = torch.cat([seg, torch.zeros_like(seg[..., :1])], -1)
            out = out + seg
        disp = out[..., :3]
        log_amp = out[..., 3] if self.amplitudes else None
        return disp, log_amp


class ModeDecoder(nn.Module):
    """Displacements in a normal-mode basis: ``d = V c(z)``, ``c = MLP(z)``."""

    def __init__(self, modes, zdim, width=64):
        super().__init__()
        modes = torch.as_tensor(np.asarray(modes), dtype=torch.float32)
        self.register_buffer('modes', modes)  # (N, 3, M)
        self.zdim = int(zdim)
        M = modes.shape[-1]
        self.mlp = nn.Sequential(nn.Linear(self.zdim, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, M))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z):
        c = self.mlp(z)  # (B, M)
        return torch.einsum('nim,bm->bni', self.modes, c), None

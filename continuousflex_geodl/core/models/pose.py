"""Per-particle pose corrections learned jointly with the model.

Each particle i has a small rotation ``w_i`` (axis-angle vector in degrees,
applied in the image frame: ``R'_i = exp([w_i]x) R_i``) and shift ``dt_i``
(A, added to t_i), zero-initialised; both are stored in an (N, 5) table so
one learning rate moves them by comparable amounts (degrees, A).  A Gaussian prior (``rot_sd_deg``, ``shift_sd``)
keeps them small; ``penalty`` is its negative log density in nats.  ``rot_sd_deg = 0``
keeps the rotations as given and corrects the shifts only.
"""
import math

import torch
import torch.nn as nn

from ..settings import pose_widths_valid


def axis_angle_to_matrix(w):
    """(B, 3) axis-angle vectors (radians) -> (B, 3, 3) rotations (Rodrigues)."""
    theta = torch.sqrt((w ** 2).sum(-1, keepdim=True) + 1e-12)
    k = w / theta
    K = torch.zeros(w.shape[:-1] + (3, 3), dtype=w.dtype, device=w.device)
    K[..., 0, 1], K[..., 0, 2] = -k[..., 2], k[..., 1]
    K[..., 1, 0], K[..., 1, 2] = k[..., 2], -k[..., 0]
    K[..., 2, 0], K[..., 2, 1] = -k[..., 1], k[..., 0]
    s = torch.sin(theta).unsqueeze(-1)
    c = torch.cos(theta).unsqueeze(-1)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand_as(K)
    return eye + s * K + (1 - c) * (K @ K)


class PoseCorrection(nn.Module):
    """Per-particle rotation (3, degrees) and shift (2, A) corrections, (N, 5)."""

    def __init__(self, n_particles, rot_sd_deg=2.0, shift_sd=1.0):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(int(n_particles), 5))
        self.rot_sd = float(rot_sd_deg)
        self.shift_sd = float(shift_sd)
        if not pose_widths_valid(self.rot_sd, self.shift_sd):
            raise ValueError('pose prior widths: rotation >= 0 deg and shift > 0 A, got %g '
                             'and %g' % (self.rot_sd, self.shift_sd))
        # rotation components frozen at zero when their prior width is 0
        self.register_buffer('mask', torch.tensor([float(self.rot_sd > 0)] * 3 + [1.0, 1.0]),
                             persistent=False)

    def _delta(self, idx):
        return self.delta[idx] * self.mask

    def forward(self, idx, rotations, shifts):
        d = self._delta(idx)
        R = axis_angle_to_matrix(d[:, :3] * (math.pi / 180.0)) @ rotations
        return R, shifts + d[:, 3:]

    def penalty(self, idx):
        """Negative log prior (nats) per particle, (B,)."""
        d = self._delta(idx)
        shift = 0.5 * ((d[:, 3:] / self.shift_sd) ** 2).sum(-1)
        if self.rot_sd == 0:
            return shift
        return 0.5 * ((d[:, :3] / self.rot_sd) ** 2).sum(-1) + shift

    def corrected(self, rotations, shifts):
        """All particles' corrected (rotations (N, 3, 3), shifts (N, 2)), numpy in."""
        with torch.no_grad():
            d = (self.delta * self.mask).detach().cpu().double()
            R = axis_angle_to_matrix(d[:, :3] * (math.pi / 180.0)).numpy() @ rotations
            return R, shifts + d[:, 3:].numpy()

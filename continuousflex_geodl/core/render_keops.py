"""KeOps projector: the exact sum of 2D Gaussians as a lazy-tensor reduction.

``project_keops(uv, amplitudes, sigma, box, apix)`` evaluates, for every
pixel centre ``r_i`` of every image b,

    I_b(r_i) = sqrt(2 pi) sigma * sum_j a_bj exp(-|r_i - u_bj|^2 / (2 sigma^2))

as one KeOps ``Sum`` reduction with pixels as the ``i`` variable and atoms as
the ``j`` variable (batch dimension b; the pixel grid is broadcast over it).
Nothing of size pixels x atoms is ever stored, so memory stays linear in
N + D^2; the work is quadratic (N * D^2 per image).  The same numbers as the
'exact' separable projector (to float rounding, 1e-4 relative in float32).

Coordinates are divided by ``sqrt(2) sigma`` in torch before the reduction,
so the KeOps formula ``Exp(-SqNorm2(x - y)) * a`` does not depend on sigma:
one compiled formula per dtype (plus its gradients) serves every width, box
and batch size.  Differentiable (KeOps' own gradient formulas) with respect
to ``uv``, ``amplitudes`` and ``sigma``.

Use it for large clouds on a GPU.  On the CPU it is much slower than the
separable 'exact' path (see ``core.render_fft`` for figures); each new formula
costs about 6 s of g++ compilation on first use (cached in
``runtime.keops_cache_folder()``).
"""
import math

from . import runtime


def _pixel_grid(box, apix, dtype, device):
    """(D*D, 2) pixel-centre coordinates (x, y) in A, row-major over [iy, ix]."""
    import torch
    c = (torch.arange(box, dtype=dtype, device=device) - box // 2) * apix
    yy, xx = torch.meshgrid(c, c, indexing='ij')
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def project_keops(uv, amplitudes, sigma, box, apix):
    """Projection images (B, D, D) of 2D Gaussians at ``uv`` (B, N, 2) in A.

    ``amplitudes`` (B, N) (or broadcastable), ``sigma`` in A (float or 0-d
    tensor), ``box`` D pixels, ``apix`` A/pixel.  float32 or float64, CPU or
    CUDA tensors.
    """
    import torch
    runtime.init_keops()
    from pykeops.torch import LazyTensor

    if uv.ndim != 3 or uv.shape[-1] != 2:
        raise ValueError('uv must be (B, N, 2) image positions in A, got shape %s'
                         % (tuple(uv.shape),))
    B, N, _ = uv.shape
    dtype, device = uv.dtype, uv.device
    amplitudes = amplitudes.to(dtype).expand(B, N)
    sig = torch.as_tensor(sigma, dtype=dtype, device=device)
    inv = 1.0 / (math.sqrt(2.0) * sig)
    pix = (_pixel_grid(box, apix, dtype, device) * inv).reshape(1, box * box, 1, 2)
    pts = (uv * inv).reshape(B, 1, N, 2)
    x_i = LazyTensor(pix.contiguous())
    y_j = LazyTensor(pts.contiguous())
    a_j = LazyTensor(amplitudes.reshape(B, 1, N, 1).contiguous())
    k_ij = (-((x_i - y_j) ** 2).sum(-1)).exp() * a_j        # (B, D*D, N) lazily
    img = k_ij.sum(dim=2)                                   # (B, D*D, 1)
    return (math.sqrt(2 * math.pi) * sig) * img.reshape(B, box, box)

"""Conformational landscapes from per-particle latents (any source).

Modules (one concept each; no Scipion, no model import -- structures come
through a ``decode_fn(z (M, K)) -> positions (M, N, 3)`` callable):

* ``embedding``   -- PCA / UMAP / t-SNE, fitted once, saved, reused
* ``density``     -- KDE and free energy dG = -kT ln(p/p_max), bootstrap errors
* ``mixture``     -- Gaussian mixtures as arrays; the model's trained prior
* ``basins``      -- free-energy basins by topological persistence
* ``states``      -- k-means / GMM / prior states, populations with bootstrap CIs
* ``paths``       -- PCA-axis, density-following and cryoTWIN ridgeline paths
* ``series``      -- structures (PDB, MRC) at latent points
* ``diagnostics`` -- isometry, prior-fit KL, agreement of two latent spaces
* ``subsets``     -- particle selections and their export
* ``plots``       -- matplotlib drawings (Agg), reused by the viewers
* ``pipeline``    -- folder-level operations run by ``continuousflex-geodl landscape``
* ``toy``         -- synthetic three-state landscape with a known answer
"""

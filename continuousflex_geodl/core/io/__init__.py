"""File formats of the core: ``mrc`` (maps and stacks, lazy; the one MRC stack
writer), ``stack`` (lazy image sources), ``star`` (RELION particle .star
3.0/3.1, the one STAR reader and writer), ``xmd`` (Xmipp metadata), ``pdb``
(PDB/mmCIF through gemmi), ``latents`` (latent arrays).

The readers return plain arrays and tables; io never imports the model
(``core.particles``, ``core.models``): those import io."""

"""File formats of the core: ``mrc`` (maps and stacks, lazy), ``stack`` (lazy image
sources), ``star`` (RELION particle .star 3.0/3.1), ``xmd`` (Xmipp metadata)."""

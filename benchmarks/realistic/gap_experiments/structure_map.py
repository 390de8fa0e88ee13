"""The landscape on decoded structures instead of latents (a measurement, not yet a
`landscape` option).

For a run folder (``RUN/model``, ``RUN/z.npy``): every particle's structure decoded
at its latent (pseudo-atom positions, A), the principal components of these
structures (4, fitted on all particles), and their coordinates written as
``RUN/structure_map/z.npy``, which ``score_run.py SET RUN/structure_map`` then
analyses like latents (``landscape analyze`` defaults).  Distances in this map are
in A of structure, so they do not depend on how fast the latent moves along the
motion, which differs between states and between priors::

    python structure_map.py RUN [RUN ...]
"""
import os
import sys

import numpy as np
from sklearn.decomposition import PCA

from continuousflex_geodl.core.inference import decode_positions, load_model


def main(runs):
    for run in runs:
        model = load_model(os.path.join(run, 'model'))
        z = np.load(os.path.join(run, 'z.npy')).astype(np.float32)
        x = np.concatenate([decode_positions(model, z[i:i + 500]).reshape(len(z[i:i + 500]), -1)
                            for i in range(0, len(z), 500)])
        pca = PCA(4).fit(x)
        out = os.path.join(run, 'structure_map')
        os.makedirs(out, exist_ok=True)
        np.save(os.path.join(out, 'z.npy'), pca.transform(x).astype(np.float32))
        print('%s: variance ratio %s, RMS amplitude per pseudo-atom (A) %s' % (
            run, np.round(pca.explained_variance_ratio_, 3),
            np.round(np.sqrt(pca.explained_variance_ / (x.shape[1] / 3)), 3)), flush=True)


if __name__ == '__main__':
    main(sys.argv[1:])

"""|Spearman| of latent PC1 and the kNN (k = 10) error of latents against a
realistic set's true path coordinate: ``score_latents.py z.npy ground_truth.npz``."""
import sys

import numpy as np
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

from continuousflex_geodl.core import metrics

z = np.load(sys.argv[1])
u = np.load(sys.argv[2])['path_coord']
pc1 = PCA(1).fit_transform(z)[:, 0]
print('spearman %.4f knn10 %.4f' % (abs(spearmanr(pc1, u)[0]),
                                    metrics.knn_neighbourhood_error(z, u, 10)))

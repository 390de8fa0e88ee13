"""
@article{Zhong2021cryodrgn,
title = "CryoDRGN: reconstruction of heterogeneous cryo-EM structures using neural networks",
author = "Zhong, Ellen D. and Bepler, Tristan and Berger, Bonnie and Davis, Joseph H.",
journal = "Nature Methods",
volume = "18",
pages = "176--185",
year = "2021",
doi = "http://dx.doi.org/10.1038/s41592-020-01049-4"
}

@misc{cryoTWIN,
title = "cryoTWIN: a trainable Gaussian-mixture prior on the latent space and Ray--Lindsay ridgeline pathways for cryo-EM conformational landscapes",
author = "{cryoTWIN authors}",
note = "Method whose prior, rate term and pathway construction are implemented in continuousflex_geodl (see docs/DESIGN.md); complete the bibliographic record from the published article",
year = "2024"
}

@inproceedings{Gupta2020multicryogan,
title = "Multi-CryoGAN: reconstruction of continuous conformations in cryo-EM using generative adversarial networks",
author = "Gupta, Harshit and Phan, Thong H. and Yoo, Jaejun and Unser, Michael",
booktitle = "Computer Vision -- ECCV 2020 Workshops (BioImage Computing)",
publisher = "Springer",
year = "2020",
doi = "https://openreview.net/forum?id=5PSL-CjHeP4"
}

@inproceedings{Feydy2019geomloss,
title = "Interpolating between optimal transport and MMD using Sinkhorn divergences",
author = "Feydy, Jean and S{\\'e}journ{\\'e}, Thibault and Vialard, Fran{\\c{c}}ois-Xavier and Amari, Shun-ichi and Trouv{\\'e}, Alain and Peyr{\\'e}, Gabriel",
booktitle = "Proceedings of the 22nd International Conference on Artificial Intelligence and Statistics (AISTATS)",
series = "Proceedings of Machine Learning Research",
volume = "89",
pages = "2681--2690",
year = "2019",
doi = "https://proceedings.mlr.press/v89/feydy19a.html"
}

@article{Charlier2021keops,
title = "Kernel operations on the GPU, with autodiff, without memory overflows",
author = "Charlier, Benjamin and Feydy, Jean and Glaun{\\`e}s, Joan Alexis and Collin, Fran{\\c{c}}ois-David and Durif, Ghislain",
journal = "Journal of Machine Learning Research",
volume = "22",
number = "74",
pages = "1--6",
year = "2021",
doi = "http://jmlr.org/papers/v22/20-275.html"
}

@inproceedings{Sverrisson2021dmasif,
title = "Fast end-to-end learning on protein surfaces",
author = "Sverrisson, Freyr and Feydy, Jean and Correia, Bruno E. and Bronstein, Michael M.",
booktitle = "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)",
pages = "15272--15281",
year = "2021"
}

@article{Jin2014hemnma,
title = "Iterative elastic 3D-to-2D alignment method using normal modes for studying structural dynamics of large macromolecular complexes",
author = "Jin, Qiyu and Sorzano, Carlos Oscar S. and de la Rosa-Trev{\\'i}n, Jos{\\'e} Miguel and Bilbao-Castro, Jos{\\'e} Rom{\\'a}n and N{\\'u}{\\~n}ez-Ram{\\'i}rez, Rafael and Llorca, Oscar and Tama, Florence and Joni{\\'c}, Slavica",
journal = "Structure",
volume = "22",
number = "3",
pages = "496--506",
year = "2014",
doi = "http://dx.doi.org/10.1016/j.str.2014.01.004"
}

@article{Harastani2020hemnma,
title = "Hybrid electron microscopy normal mode analysis with Scipion",
author = "Harastani, Mohamad and Sorzano, Carlos Oscar S. and Joni{\\'c}, Slavica",
journal = "Protein Science",
volume = "29",
number = "1",
pages = "223--236",
year = "2020",
doi = "http://dx.doi.org/10.1002/pro.3772"
}

@article{Hamitouche2022deephemnma,
title = "DeepHEMNMA: ResNet-based hybrid analysis of continuous conformational heterogeneity in cryo-EM single particle images",
author = "Hamitouche, Ilyes and Joni{\\'c}, Slavica",
journal = "Frontiers in Molecular Biosciences",
volume = "9",
pages = "965645",
year = "2022",
doi = "http://dx.doi.org/10.3389/fmolb.2022.965645"
}

@article{Harastani2022continuousflex,
title = "ContinuousFlex: software package for analyzing continuous conformational variability of macromolecules in cryo electron microscopy and tomography data",
author = "Harastani, Mohamad and Vuillemot, R{\\'e}mi and Hamitouche, Ilyes and Barati Moghadam, Nima and Joni{\\'c}, Slavica",
journal = "Journal of Structural Biology",
volume = "214",
number = "4",
pages = "107906",
year = "2022",
doi = "http://dx.doi.org/10.1016/j.jsb.2022.107906"
}

@article{delaRosaTrevin2016scipion,
title = "Scipion: a software framework toward integration, reproducibility and validation in 3D electron microscopy",
author = "de la Rosa-Trev{\\'i}n, Jos{\\'e} Miguel and Quintana, Adri{\\'a}n and del Cano, Laura and Zaldivar, Airen and Foche, Ignacio and Guti{\\'e}rrez, Jos{\\'e} and G{\\'o}mez-Blanco, Javier and Burguet-Castell, Jordi and Cuenca-Alba, Jes{\\'u}s and Abrishami, Vahid and Vargas, Javier and Ot{\\'o}n, Joaqu{\\'i}n and Sharov, Grigory and Vilas, Jos{\\'e} Luis and Navas, Javier and Conesa, Pablo and Kazemi, Mohsen and Marabini, Roberto and Sorzano, Carlos Oscar S. and Carazo, Jos{\\'e} Mar{\\'i}a",
journal = "Journal of Structural Biology",
volume = "195",
number = "1",
pages = "93--99",
year = "2016",
doi = "http://dx.doi.org/10.1016/j.jsb.2016.04.010"
}
"""

"""Constants of the Scipion layer: plugin variables, attribute names, choices.

Nothing here imports Scipion; the core never needs these names.
"""
from .core.settings import (EmbeddingMethod, EncoderInputs, EnergyUnit, MapKernel, Motion,
                            PathKind, Population, Prior, StateMethod)

# ---- Plugin variables (Scipion config / environment) -----------------------
#: Default device for protocols that train or decode: 'cpu' or 'cuda'.
CFGEODL_DEVICE = 'CFGEODL_DEVICE'
CFGEODL_DEVICE_DEFAULT = 'cpu'
#: Fixed, writable KeOps build folder shared by all runs (JIT-compiled formulas
#: are reused; the default KeOps folder changes with the host name).
CFGEODL_KEOPS_CACHE = 'CFGEODL_KEOPS_CACHE'
#: Python interpreter that has the core installed (default: Scipion's own).
CFGEODL_PYTHON = 'CFGEODL_PYTHON'
#: Command that starts one process on each machine of a multi-machine queue
#: job (``{nodes}``: the number of machines); the train protocol prefixes
#: its torchrun command with it when the job has several machines.
CFGEODL_NODE_LAUNCHER = 'CFGEODL_NODE_LAUNCHER'
CFGEODL_NODE_LAUNCHER_DEFAULT = 'srun --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1'

#: Name stored in FlexInfo.progName of every flexible object we produce.
PROG_NAME = 'ContinuousFlexGeoDL'

#: The command the protocols run in a worker process:
#: ``<python> -m continuousflex_geodl <command> ...``.
CLI_MODULE = 'continuousflex_geodl'

# ---- Attributes written on Scipion objects ---------------------------------
#: Ground-truth conformational coordinates of simulated particles (CsvList).
ATTR_GT_COORD = '_cfgeodl_gtCoord'
#: Ground-truth state (Integer, 1-based population component) of simulated particles.
ATTR_GT_STATE = '_cfgeodl_gtState'
#: Landscape state / cluster label of a particle (Integer, 1-based).
ATTR_STATE = '_cfgeodl_state'
#: Free energy dG (Float, kT, 0 at the most populated point) at each particle.
ATTR_DG = '_cfgeodl_dG'
#: Normal-mode amplitudes written by ContinuousFlex HEMNMA (CsvList).
ATTR_HEMNMA = '_xmipp_nmaDisplacements'
#: Half of a half-set validation a particle was trained in (Integer, 1 or 2).
ATTR_HALF = '_cfgeodl_half'
#: Latents of the model of half 2, aligned into the space of half 1 (CsvList).
ATTR_Z_HALF2 = '_cfgeodl_zHalf2'
#: Disagreement of the two half-set models for a particle (Float, relative).
ATTR_HALF_ERROR = '_cfgeodl_halfSetError'

# FlexInfo attribute names (set with FlexInfo.setAttr)
FLEX_MODEL_DIR = 'modelPath'
FLEX_ZDIM = 'zdim'
FLEX_LATENTS_FILE = 'latentsFile'
FLEX_SOURCE = 'latentSource'

# ---- Choices -----------------------------------------------------------------
# The choice lists of the core (str enums in core.settings, the one place that
# defines them; standard library only, no numpy / torch).  A Scipion EnumParam
# stores the index in these lists.
MOTIONS = Motion.values()
POPULATIONS = Population.values()
PRIORS = Prior.values()
ENCODER_INPUTS = EncoderInputs.values()
EMBEDDINGS = EmbeddingMethod.values()
STATE_METHODS = StateMethod.values()
UNITS = EnergyUnit.values()
MAP_KERNELS = MapKernel.values()

#: Where landscape coordinates come from (protocol choice -> meaning)
SOURCE_ZFLEX, SOURCE_HEMNMA, SOURCE_ATTR, SOURCE_XMD = 0, 1, 2, 3
LATENT_SOURCES = ['latents of flexible particles (zFlex)',
                  'HEMNMA / DeepHEMNMA normal-mode amplitudes',
                  'another particle attribute',
                  'column of an Xmipp metadata file (.xmd)']

#: Pathway kinds of ``landscape path`` (density, cryoTWIN ridgeline, principal axis)
PATH_KINDS = PathKind.values()

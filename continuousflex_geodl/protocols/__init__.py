"""Scipion protocols of continuousflex_geodl (one module per protocol).

Every protocol module is imported here explicitly: Scipion finds protocols by
scanning this package, and a failing import would silently hide them all
(``tests/scipion/test_scipion_registry.py`` counts them).
"""
from .protocol_base import GeoDLProtBase
from .protocol_simulate import GeoDLProtSimulate
from .protocol_train import GeoDLProtTrain
from .protocol_predict import GeoDLProtPredict
from .protocol_subset import GeoDLProtSubset
from .protocol_hemnma_to_flex import GeoDLProtHemnmaToFlex
from .protocol_compare import GeoDLProtCompareLandscapes
from .protocol_structures import GeoDLProtStructures
from .protocol_landscape import GeoDLProtLandscape
from .protocol_poses import GeoDLProtPoses
from .protocol_validate import GeoDLProtValidate

#: protocol modules of this package (checked by the registry test)
PROTOCOL_MODULES = ['protocol_simulate', 'protocol_train', 'protocol_predict',
                    'protocol_subset', 'protocol_hemnma_to_flex', 'protocol_compare',
                    'protocol_structures', 'protocol_landscape', 'protocol_poses',
                    'protocol_validate']

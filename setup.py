"""continuousflex_geodl: geometric deep learning of conformational landscapes (Scipion plugin)."""
import os

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
with open(os.path.join(here, 'README.rst'), encoding='utf-8') as f:
    long_description = f.read()


def version():
    with open(os.path.join(here, 'continuousflex_geodl', '_version.py')) as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip("'\"")
    raise RuntimeError('no __version__')


setup(
    name='scipion-em-continuousflex-geodl',
    version=version(),
    description='Conformational landscapes from cryo-EM particles with geometric deep '
                'learning (point clouds, optimal transport, KeOps) - a Scipion plugin '
                'extending ContinuousFlex',
    long_description=long_description,
    long_description_content_type='text/x-rst',
    license='GPLv3',
    python_requires='>=3.8',
    packages=find_packages(exclude=['benchmarks', 'benchmarks.*']),
    include_package_data=True,
    package_data={'continuousflex_geodl': ['protocols.conf', 'resources/*']},
    install_requires=[
        'scipion-pyworkflow>=3.0',
        'scipion-em>=3.0',
        'numpy',
        'scipy',
        'torch>=2.0',
        'pykeops>=2.2',
        'geomloss>=0.3',
        'mrcfile',
        'gemmi',
        'starfile',
        'scikit-learn',
        'umap-learn',
        'matplotlib',
        'POT',
    ],
    extras_require={
        'test': ['pytest', 'pytest-timeout', 'hypothesis', 'scipion-app', 'import-linter',
                 'scipion-em-continuousflex', 'scipion-em-xmipp', 'scipion-em-flexutils'],
    },
    entry_points={
        'pyworkflow.plugin': ['continuousflex_geodl = continuousflex_geodl'],
        'console_scripts': ['continuousflex-geodl = continuousflex_geodl.core.cli:main'],
    },
    classifiers=['Programming Language :: Python :: 3'],
)

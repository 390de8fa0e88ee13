"""Rotation and shift errors of a star's poses against a realistic set's truth:
``score_poses.py POSED.star ground_truth.npz`` (prints a dict: median / mean)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pose_repair import errors  # noqa: E402

from continuousflex_geodl.core.particles import load_particles  # noqa: E402

p = load_particles(sys.argv[1])
gt = np.load(sys.argv[2])
print(sys.argv[1], errors(p.euler, p.shifts, gt, np.arange(len(p))))

"""Tests of the Scipion-free core (``continuousflex_geodl.core``): no Scipion needed."""

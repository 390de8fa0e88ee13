"""Scipion viewers of continuousflex_geodl (one module per viewer).

They draw what the core computed (training curves, landscapes, paths); the
plotting itself is testable headlessly with the Agg backend.
"""

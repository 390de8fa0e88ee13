"""Tests of the Scipion side: protocols, conversions, viewers, registry, projects
(skipped with a reason where Scipion cannot be imported)."""

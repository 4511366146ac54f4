"""What the tests share, imported as ``helpers.<module>`` (pytest.ini puts tests/ on the path; no test file imports
another test file):

- :mod:`helpers.paths`: the repository, the committed bundle fixtures, the workspace's real data.
- :mod:`helpers.phantoms`: tiny analytic images in physical space (the head-and-neck phantom, spheres, directions).
- :mod:`helpers.hostile_inputs`: the hostile-input matrix, the one source of truth for odd inputs, and the page
  ``docs/reference/bad-inputs.md`` generated from it (``python -m tests.helpers.hostile_inputs`` rewrites it).
- :mod:`helpers.containers`: the containers' ``inference.py`` run in-process, their output contracts, and the tiny
  bundles and the synthetic case they run on.
- :mod:`helpers.predictors`: tiny Task 2 and Task 3 fold ensembles built by hand.

The modules import each other relatively (``from .phantoms import ...``), so that the matrix also runs as a module
from the repository root. Fixtures shared by every folder live in ``tests/conftest.py``.
"""

"""hecktor: the shared library of the HECKTOR 2025 toolkit.

Conventions used everywhere in the package:

* Geometry lives in SimpleITK images (physical LPS coordinates in mm) until the last moment.
* Arrays taken from SimpleITK are in (z, y, x) order (``sitk.GetArrayFromImage``); network inputs are
  channels-first ``(C, z, y, x)`` with channel 0 = CT and channel 1 = PET.
* Labels: 0 background, 1 GTVp (primary tumour), 2 GTVn (lymph nodes).
* User-facing failures raise :class:`hecktor.errors.InputError` or :class:`hecktor.errors.BundleError`
  with a one-line message.
"""

__version__ = "0.1.0"

from hecktor.labels import LABELS  # noqa: E402,F401  (declared once, in hecktor.labels)

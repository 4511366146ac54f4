"""Exceptions raised by the hecktor library.

Every error meant for a user carries one line that names the offending file or folder and, where there is one,
the fix. Entry points print ``str(error)`` to stderr and exit non-zero instead of showing a traceback.
"""


class HecktorError(Exception):
    """Base class of the library's user-facing errors."""


class InputError(HecktorError, ValueError):
    """An input (image, folder, CSV, ehr.json) is missing, unreadable or inconsistent."""


class BundleError(HecktorError):
    """An exported model bundle is missing files, fails its manifest check, or does not match its plan."""

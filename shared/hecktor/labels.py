"""The label set of the segmentation task, declared once.

0 background, 1 GTVp (primary tumour), 2 GTVn (lymph nodes): the values of the training label maps and of the Task 1
container's ``output.mha``.
"""

from __future__ import annotations

BACKGROUND = 0
GTVP = 1
GTVN = 2

LABELS: dict[str, int] = {"background": BACKGROUND, "GTVp": GTVP, "GTVn": GTVN}
"""Every label by name."""

FOREGROUND: dict[str, int] = {"GTVp": GTVP, "GTVn": GTVN}
"""The labels that are scored."""

N_CLASSES = len(LABELS)
"""Output channels of a segmentation network (one per label)."""

"""Deep supervision (nnU-Net's): extra 1**3 output heads on coarser decoder levels, used in training only.

The contract that every deep-supervised network of ``hecktor.networks`` follows (HecMamba, DynUNet):

* the configuration flag ``deep_supervision`` (default ``False``, so a stored configuration without the key rebuilds
  the network it was trained as) adds one 1**3 output head per coarser decoder level; the heads' parameters live
  under ``ds_heads.*``;
* in *training* mode with the flag on, ``forward`` returns a list of logits tensors, the full-resolution output first,
  then one per coarser decoder level, each at *its own* resolution (nnU-Net's layout: the loss is computed against
  targets downsampled to each output's shape, e.g. by MONAI's ``DeepSupervisionLoss``, which resizes the target
  with nearest-exact interpolation). For an input of spatial size n, an output of downsampling factor s has
  ceil(n / s) voxels along that axis (the far-end padding is cropped off, as for the full-resolution output);
* in *eval* mode ``forward`` returns the full-resolution tensor only and never runs the heads, so sliding-window
  inference and exported bundles cost exactly what the network without heads costs;
* a state dict with ``ds_heads.*`` weights loads into a network built with ``deep_supervision=False`` (strict loading
  included): such a network ignores those keys (``IgnoresDeepSupervisionHeads``). So an exporter may keep or drop
  the flag and the heads' weights; dropping both (``strip_deep_supervision``) saves the heads' few parameters.

Loss weights: ``deep_supervision_weights(len(outputs))``, nnU-Net's (halving per level, the coarsest level weighted 0,
normalised to sum 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "DS_HEADS",
    "IgnoresDeepSupervisionHeads",
    "crop_to_input",
    "deep_supervision_weights",
    "strip_deep_supervision",
]

DS_HEADS = "ds_heads"  # attribute (and state-dict key prefix) of the extra heads in every network


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's loss weights for ``n_outputs`` deep-supervision outputs, full resolution first.

    Each coarser output weighs half the previous one, the coarsest gets weight 0 (nnU-Net: its resolution is too
    low to help), and the weights are normalised to sum 1: 5 outputs give [1, 0.5, 0.25, 0.125, 0] / 1.875. One
    output (no deep supervision) gets [1.0].

    Args:
        n_outputs: number of outputs of the network in training mode (``len(outputs)``).
    """
    if n_outputs < 1:
        raise ValueError(f"deep_supervision_weights: need at least one output, got {n_outputs}.")
    if n_outputs == 1:
        return [1.0]
    weights = [0.5**level for level in range(n_outputs)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def crop_to_input(output: torch.Tensor, spatial: Sequence[int], padded: Sequence[int]) -> torch.Tensor:
    """Crop the far-end padding off an output of a network run on an input padded from ``spatial`` to ``padded``.

    The output may be at a coarser resolution (a deep-supervision head): its downsampling factor along each axis is
    ``padded / output size`` and it keeps ceil(spatial / factor) voxels, those that cover the unpadded input.
    """
    sizes = output.shape[2:]
    keep = []
    for size, original, total in zip(sizes, spatial, padded):
        factor = total // size
        if factor * size != total:
            raise ValueError(
                f"crop_to_input: output size {tuple(sizes)} does not divide the padded input size {tuple(padded)}."
            )
        keep.append(slice(0, -(-original // factor)))
    return output[(slice(None), slice(None), *keep)]


def strip_deep_supervision(state_dict: Mapping[str, Any], config: Mapping[str, Any] | None = None):
    """The state dict without the deep-supervision heads' weights (any key with a ``ds_heads`` component), and the
    network configuration with ``deep_supervision`` switched off (``None`` if no configuration is given).

    Not needed to load such weights (networks without heads ignore them), but an exporter can use it to ship only
    what inference runs.
    """
    kept = {key: value for key, value in state_dict.items() if DS_HEADS not in key.split(".")}
    plain = None if config is None else {**config, "deep_supervision": False}
    return kept, plain


class IgnoresDeepSupervisionHeads:
    """Mixin for a network with optional ``ds_heads``: when it has none, ``load_state_dict`` skips ``ds_heads.*``.

    So weights trained with deep supervision load (strictly) into the same network built without it. Overrides
    ``torch.nn.Module._load_from_state_dict``, the hook PyTorch itself uses for such migrations (BatchNorm's
    ``num_batches_tracked``); put the mixin before ``nn.Module`` in the bases.
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if getattr(self, DS_HEADS, None) is None:
            heads = f"{prefix}{DS_HEADS}."
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(heads)}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

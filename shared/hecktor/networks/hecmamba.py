"""HecMamba: a SegMamba-style 3-D Mamba U-Net with tri-orientated scanning that runs with or without mamba_ssm.

Layout (following SegMamba, Xing et al., MICCAI 2024; widths for the default configuration):

* encoder: stem convolution 7**3 / stride 2 to 48 channels; four stages of widths 48/96/192/384, each a
  downsampling (instance norm + 2**3 convolution, stride 2; the stem plays that role for the first stage), a gated
  spatial convolution block (GSC), ``depth`` tri-orientated Mamba layers over the flattened volume, and a
  normalisation + MLP whose output is the stage's skip feature;
* decoder: MONAI UNETR blocks, a residual block on the input and on each stage's output, transposed-convolution
  up-blocks with skip connections from every stage, and a 1**3 output convolution;
* deep supervision (``deep_supervision=True``, off by default): a 1**3 output head on each up-block output below
  full resolution (1/2, 1/4, ..., 1/2**(stages - 1): three extra heads with four stages). In training mode
  ``forward`` then returns ``[full, 1/2, 1/4, ...]`` logits, each at its own resolution; in eval mode only the
  full-resolution logits, without running the heads. Weights with heads load into a network built without them
  (the heads' keys are ignored). See ``hecktor.networks.deep_supervision`` for the contract and the loss weights.

Tri-orientated Mamba (``TriOrientedMamba``): the tokens of a (D, H, W) volume, flattened in (D, H, W) order, are
scanned forwards, backwards, and in *inter-slice* order (all D slices at one in-plane position, then the next
position: the sequence of a (D, H*W) -> (H*W, D) transpose). Each direction has its own complete Mamba mixer
(``MambaMixer``) and the three outputs are summed. The mixer is written here in PyTorch and calls
``hecktor.scan.selective_scan``, so the model is the same with the mamba_ssm CUDA kernel and with the pure-PyTorch
scan (SegMamba's own Mamba block scans one direction only on its non-fused path, ``use_fast_path=False``).

Inputs of any spatial size are accepted: they are zero-padded at the far end of each axis to a multiple of the total
stride (2 ** number of stages) and the output is cropped back. In training mode the deepest stage must still hold more
than one voxel (instance normalisation), e.g. at least 32 voxels along one axis with four stages.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrUpBlock

from hecktor.networks.deep_supervision import IgnoresDeepSupervisionHeads, crop_to_input
from hecktor.scan import selective_scan

__all__ = [
    "GSC",
    "HecMamba",
    "HecMambaConfig",
    "MambaLayer",
    "MambaMixer",
    "SCAN_ORIENTATIONS",
    "TriOrientedMamba",
    "from_scan_order",
    "to_scan_order",
]

SCAN_ORIENTATIONS = ("forward", "reverse", "inter_slice")


@dataclass
class HecMambaConfig:
    """Size and behaviour of a HecMamba network (stored with trained weights as a plain dict).

    Attributes:
        in_channels: input channels (2: CT, PET).
        out_channels: output classes (3: background, GTVp, GTVn).
        widths: channels of each encoder stage; the number of stages is ``len(widths)``.
        depths: tri-orientated Mamba layers per stage.
        hidden_size: channels of the bottleneck block on the deepest stage.
        d_state: SSM state size N.
        d_conv: kernel of the mixers' causal depthwise convolution.
        expand: inner width of the mixers relative to the stage width.
        mlp_ratio: hidden width of each stage's output MLP relative to the stage width.
        norm_name: normalisation of the MONAI decoder blocks.
        scan_backend: ``"auto"``, ``"torch"`` or ``"cuda"`` (see ``hecktor.scan``).
        scan_chunk_size: positions per segment of the torch scan; ``None`` for its device default.
        deep_supervision: add output heads on the coarser decoder levels, used in training mode only (needs at least
            two stages). Off by default so that stored configurations without the key rebuild the same network.
        full_resolution_width: channels of the decoder's full-resolution blocks (the input's residual block, the last
            up-block, the final block and the head); ``None``: ``widths[0]``, so that stored configurations without the
            key rebuild the same network.
    """

    in_channels: int = 2
    out_channels: int = 3
    widths: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    hidden_size: int = 768
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    mlp_ratio: float = 2.0
    norm_name: str = "instance"
    scan_backend: str = "auto"
    scan_chunk_size: int | None = None
    deep_supervision: bool = False
    full_resolution_width: int | None = None

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.depths = tuple(int(d) for d in self.depths)
        if not self.widths or len(self.widths) != len(self.depths):
            raise ValueError(
                f"HecMambaConfig: widths {self.widths} and depths {self.depths} must be non-empty and of equal length."
            )
        if min(self.widths) < 1 or min(self.depths) < 0:
            raise ValueError(f"HecMambaConfig: widths must be positive and depths non-negative, got {self}.")
        self.deep_supervision = bool(self.deep_supervision)
        if self.full_resolution_width is not None:
            self.full_resolution_width = int(self.full_resolution_width)
            if self.full_resolution_width < 1:
                raise ValueError(
                    f"HecMambaConfig: full_resolution_width must be positive, got {self.full_resolution_width}."
                )
        if self.deep_supervision and len(self.widths) < 2:
            raise ValueError(
                f"HecMambaConfig: deep_supervision needs at least two stages (a decoder level below full resolution), "
                f"got widths {self.widths}."
            )

    @property
    def decoder_width(self) -> int:
        """Channels of the full-resolution decoder blocks."""
        return self.widths[0] if self.full_resolution_width is None else self.full_resolution_width

    @property
    def total_stride(self) -> int:
        """Downsampling factor of the deepest stage; inputs are padded to a multiple of it."""
        return 2 ** len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None) -> HecMambaConfig:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are an error."""
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"HecMambaConfig: unknown keys {unknown}; known keys are {sorted(known)}.")
        return cls(**config)


class MambaMixer(nn.Module):
    """One Mamba (S6) mixer over a (batch, L, d_model) sequence, as in mamba_ssm's ``Mamba`` block.

    in_proj -> (x, z); x -> causal depthwise conv1d -> SiLU -> x_proj -> (dt, B, C); dt -> dt_proj;
    y = selective_scan(x, dt, A, B, C, D, z, dt bias, softplus); out_proj(y). Initialisation follows mamba_ssm
    (S4D-real A, dt bias so that softplus(bias) lies in [dt_min, dt_max], D = 1).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_backend: str = "auto",
        scan_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.scan_backend = scan_backend
        self.scan_chunk_size = scan_chunk_size

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        dt_init_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        # As in mamba_ssm: optimisers should leave A and D out of weight decay (trainers can test this attribute).
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, L, d_model) -> (batch, L, d_model)."""
        length = hidden.shape[1]
        xz = self.in_proj(hidden).transpose(1, 2)  # (batch, 2 * d_inner, L)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias goes to the scan, before its softplus
        # Strided views are fine: the torch scan reads them segment by segment, mamba_ssm copies what it needs.
        y = selective_scan(
            x,
            dt,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.scan_backend,
            chunk_size=self.scan_chunk_size,
        )
        return self.out_proj(y.transpose(1, 2))


def to_scan_order(tokens: torch.Tensor, spatial_shape: tuple[int, int, int], orientation: str) -> torch.Tensor:
    """Reorder (batch, D*H*W, C) tokens, flattened in (D, H, W) order, into the sequence of one scan orientation.

    ``"forward"``: unchanged; ``"reverse"``: last voxel first; ``"inter_slice"``: for each in-plane position (h, w) in
    raster order, the D voxels of that position from the first slice to the last.
    """
    if orientation == "forward":
        return tokens
    if orientation == "reverse":
        return tokens.flip(1)
    if orientation == "inter_slice":
        depth = spatial_shape[0]
        batch, length, channels = tokens.shape
        return tokens.reshape(batch, depth, length // depth, channels).transpose(1, 2).reshape(batch, length, channels)
    raise ValueError(f"Unknown scan orientation {orientation!r}; choose one of {SCAN_ORIENTATIONS}.")


def from_scan_order(tokens: torch.Tensor, spatial_shape: tuple[int, int, int], orientation: str) -> torch.Tensor:
    """Inverse of ``to_scan_order``: back to (D, H, W) token order."""
    if orientation == "inter_slice":
        depth = spatial_shape[0]
        batch, length, channels = tokens.shape
        return tokens.reshape(batch, length // depth, depth, channels).transpose(1, 2).reshape(batch, length, channels)
    return to_scan_order(tokens, spatial_shape, orientation)  # identity and flip are their own inverses


class TriOrientedMamba(nn.Module):
    """Sum of three Mamba mixers, one per scan orientation, each with its own parameters."""

    def __init__(self, d_model: int, **mixer_kwargs: Any) -> None:
        super().__init__()
        # Keys are prefixed: "forward" is a reserved attribute name of nn.Module.
        self.mixers = nn.ModuleDict({f"scan_{name}": MambaMixer(d_model, **mixer_kwargs) for name in SCAN_ORIENTATIONS})

    def mixer(self, orientation: str) -> MambaMixer:
        """The mixer of one orientation (``SCAN_ORIENTATIONS``)."""
        return self.mixers[f"scan_{orientation}"]

    def forward(self, tokens: torch.Tensor, spatial_shape: tuple[int, int, int]) -> torch.Tensor:
        """(batch, D*H*W, C) tokens in (D, H, W) order -> same shape."""
        out = None
        for name in SCAN_ORIENTATIONS:
            sequence = to_scan_order(tokens, spatial_shape, name)
            mixed = from_scan_order(self.mixer(name)(sequence), spatial_shape, name)
            out = mixed if out is None else out + mixed
        return out


class MambaLayer(nn.Module):
    """x + TriOrientedMamba(LayerNorm(x)) over the flattened volume (SegMamba's MambaLayer)."""

    def __init__(self, dim: int, **mixer_kwargs: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = TriOrientedMamba(dim, **mixer_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        spatial_shape = tuple(x.shape[2:])
        tokens = x.reshape(batch, channels, -1).transpose(1, 2)
        mixed = self.mamba(self.norm(tokens), spatial_shape)
        return x + mixed.transpose(1, 2).reshape(x.shape)


class GSC(nn.Module):
    """Gated spatial convolution block of SegMamba: two conv branches (3**3 x2 and 1**3), summed, 1**3, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()

        def conv_norm_act(kernel_size: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2),
                nn.InstanceNorm3d(channels),
                nn.ReLU(),
            )

        self.branch3 = nn.Sequential(conv_norm_act(3), conv_norm_act(3))
        self.branch1 = conv_norm_act(1)
        self.fuse = conv_norm_act(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fuse(self.branch3(x) + self.branch1(x))


class _StageOutput(nn.Module):
    """Instance norm + channel MLP (1**3 convolutions), the skip feature of a stage."""

    def __init__(self, channels: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = max(1, int(round(channels * mlp_ratio)))
        self.norm = nn.InstanceNorm3d(channels)
        self.mlp = nn.Sequential(nn.Conv3d(channels, hidden, 1), nn.GELU(), nn.Conv3d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))


class HecMamba(IgnoresDeepSupervisionHeads, nn.Module):
    """Hierarchical tri-orientated Mamba encoder + UNETR-block CNN decoder (see the module docstring).

    Args:
        config: a ``HecMambaConfig``, a dict accepted by ``HecMambaConfig.from_dict``, or None for the defaults.

    Input (batch, in_channels, D, H, W) of any spatial size; output (batch, out_channels, D, H, W) logits. With
    ``config.deep_supervision`` in training mode: a list of ``len(config.widths)`` logits tensors, full resolution
    first, the k-th downsampled by 2**k (ceil(D / 2**k), ... voxels). A network without heads ignores ``ds_heads.*``
    keys when loading a state dict.
    """

    def __init__(self, config: HecMambaConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(config, HecMambaConfig):
            config = HecMambaConfig.from_dict(config)
        self.config = config
        widths = config.widths
        mixer_kwargs = dict(
            d_state=config.d_state,
            d_conv=config.d_conv,
            expand=config.expand,
            scan_backend=config.scan_backend,
            scan_chunk_size=config.scan_chunk_size,
        )

        self.downsample = nn.ModuleList([nn.Conv3d(config.in_channels, widths[0], kernel_size=7, stride=2, padding=3)])
        for previous, width in zip(widths, widths[1:]):
            self.downsample.append(
                nn.Sequential(nn.InstanceNorm3d(previous), nn.Conv3d(previous, width, kernel_size=2, stride=2))
            )
        self.gsc = nn.ModuleList([GSC(width) for width in widths])
        self.stages = nn.ModuleList(
            nn.Sequential(*(MambaLayer(width, **mixer_kwargs) for _ in range(depth)))
            for width, depth in zip(widths, config.depths)
        )
        self.stage_outputs = nn.ModuleList([_StageOutput(width, config.mlp_ratio) for width in widths])

        # Decoder (SegMamba's): a residual block on the input and on each stage output; stage i's block widens it to
        # the next stage's width (the bottleneck's to hidden_size), and up-blocks walk back to the input resolution.
        block = dict(spatial_dims=3, kernel_size=3, norm_name=config.norm_name, res_block=True)
        skip_widths = [*widths[1:], config.hidden_size]
        full = config.decoder_width
        self.input_encoder = UnetrBasicBlock(in_channels=config.in_channels, out_channels=full, stride=1, **block)
        self.stage_encoders = nn.ModuleList(
            [UnetrBasicBlock(in_channels=w, out_channels=s, stride=1, **block) for w, s in zip(widths, skip_widths)]
        )
        decoder_widths = [full, *skip_widths]  # resolution 1, 1/2, ..., 1/2**n
        self.up_blocks = nn.ModuleList(
            UnetrUpBlock(
                in_channels=decoder_widths[i + 1], out_channels=decoder_widths[i], upsample_kernel_size=2, **block
            )
            for i in reversed(range(len(widths)))
        )
        self.final_block = UnetrBasicBlock(in_channels=full, out_channels=full, stride=1, **block)
        self.head = UnetOutBlock(spatial_dims=3, in_channels=full, out_channels=config.out_channels)
        # ds_heads[k - 1] reads the up-block output at resolution 1/2**k (decoder_widths[k] channels).
        self.ds_heads = None
        if config.deep_supervision:
            self.ds_heads = nn.ModuleList(
                UnetOutBlock(spatial_dims=3, in_channels=decoder_widths[k], out_channels=config.out_channels)
                for k in range(1, len(widths))
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        spatial = tuple(x.shape[2:])
        stride = self.config.total_stride
        pad = [p for size in reversed(spatial) for p in (0, -size % stride)]
        if any(pad):
            x = F.pad(x, pad)
        padded = tuple(x.shape[2:])

        skips = [self.input_encoder(x)]
        features = x
        for down, gsc, stage, stage_output, encoder in zip(
            self.downsample, self.gsc, self.stages, self.stage_outputs, self.stage_encoders
        ):
            features = stage(gsc(down(features)))
            skips.append(encoder(stage_output(features)))

        supervised = self.training and self.ds_heads is not None
        out = skips.pop()
        decoder = []  # up-block outputs, coarsest first (kept only when the heads run); decoder[-1 - k]: 1/2**k
        for up in self.up_blocks:
            out = up(out, skips.pop())
            if supervised:
                decoder.append(out)
        logits = crop_to_input(self.head(self.final_block(out)), spatial, padded)
        if not supervised:
            return logits
        coarser = [crop_to_input(head(decoder[-1 - k]), spatial, padded) for k, head in enumerate(self.ds_heads, 1)]
        return [logits, *coarser]

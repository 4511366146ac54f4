"""Deep supervision of the segmentation networks (HecMamba, DynUNet), nnU-Net's loss weights and the DynUNet layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss
from monai.networks.nets import DynUNet

from hecktor.networks import (
    DeepSupervisedDynUNet,
    HecMamba,
    build_network,
    deep_supervision_weights,
    dynunet_filters,
    dynunet_layout,
    network_config_defaults,
    strip_deep_supervision,
)

# Four stages: full resolution plus three coarser decoder levels (1/2, 1/4, 1/8).
HECMAMBA = {"widths": [4, 8, 8, 8], "depths": [1, 0, 0, 1], "hidden_size": 8, "d_state": 2}
# Four levels: full resolution plus two supervised decoder levels (1/2, 1/4); the 1/8 level is the bottleneck's.
DYNUNET = {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "filters": [4, 8, 8, 16]}


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build(name: str, deep_supervision: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(name, {**(HECMAMBA if name == "hecmamba" else DYNUNET), "deep_supervision": deep_supervision})


def test_deep_supervision_weights_are_nnunets():
    assert deep_supervision_weights(5) == pytest.approx([1 / 1.875, 0.5 / 1.875, 0.25 / 1.875, 0.125 / 1.875, 0.0])
    assert deep_supervision_weights(4) == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert deep_supervision_weights(1) == [1.0]
    assert math.isclose(sum(deep_supervision_weights(6)), 1.0)
    with pytest.raises(ValueError, match="at least one output"):
        deep_supervision_weights(0)


# Expected training-mode output sizes for a (19, 16, 21) input: ceil(size / factor) at each level.
EXPECTED_SHAPES = {
    "hecmamba": [(19, 16, 21), (10, 8, 11), (5, 4, 6), (3, 2, 3)],
    "dynunet": [(19, 16, 21), (10, 8, 11), (5, 4, 6)],
}


@pytest.mark.parametrize("name", ["hecmamba", "dynunet"])
def test_train_mode_returns_every_scale_and_eval_mode_the_full_resolution_only(name):
    net = build(name, deep_supervision=True)
    head_calls = []
    for head in net.ds_heads if name == "hecmamba" else net.net.ds_heads:
        head.register_forward_hook(lambda *args: head_calls.append(1))
    x = torch.randn(1, 2, 19, 16, 21, generator=torch.Generator().manual_seed(1))
    net.train()
    with torch.no_grad():
        outputs = net(x)
    assert isinstance(outputs, list)
    assert [tuple(o.shape[2:]) for o in outputs] == EXPECTED_SHAPES[name]
    assert all(o.shape[:2] == (1, 3) for o in outputs)
    assert len(head_calls) == len(outputs) - 1
    # Eval: one tensor, the heads never run. Instance norm keeps no running statistics and there is no dropout,
    # so train and eval modes compute the same full-resolution logits.
    net.eval()
    with torch.no_grad():
        full = net(x)
    assert isinstance(full, torch.Tensor) and full.shape == (1, 3, 19, 16, 21)
    assert len(head_calls) == len(outputs) - 1
    torch.testing.assert_close(full, outputs[0])
    # Without the flag, training mode returns a plain tensor too.
    plain = build(name, deep_supervision=False).train()
    with torch.no_grad():
        assert isinstance(plain(x), torch.Tensor)


@pytest.mark.parametrize("name", ["hecmamba", "dynunet"])
def test_deep_supervised_weights_load_into_a_plain_network(name):
    deep = build(name, deep_supervision=True, seed=0).eval()
    plain = build(name, deep_supervision=False, seed=1).eval()
    state = deep.state_dict()
    assert any(".ds_heads." in f".{k}" for k in state)
    plain.load_state_dict(state)  # strict: the heads' keys are ignored, every other weight must fit
    x = torch.randn(1, 2, 16, 16, 32, generator=torch.Generator().manual_seed(2))  # HecMamba's 1/16 stage: 1x1x2
    with torch.no_grad():
        torch.testing.assert_close(plain(x), deep(x))
    # The exporter's alternative: drop the heads and the flag.
    stripped, config = strip_deep_supervision(state, {"widths": [4], "deep_supervision": True})
    assert config == {"widths": [4], "deep_supervision": False}
    assert set(stripped) == set(plain.state_dict()) and len(stripped) < len(state)
    plain.load_state_dict(stripped)
    # Other unexpected keys are still refused, and a network with heads needs their weights.
    with pytest.raises(RuntimeError, match="Unexpected key"):
        plain.load_state_dict({**stripped, "stray.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Missing key.*ds_heads"):
        build(name, deep_supervision=True).load_state_dict(stripped)


def test_parameter_counts():
    # The heads are 1**3 convolutions to 3 classes: (channels + 1) * 3 parameters each.
    hecmamba = {flag: n_parameters(build("hecmamba", flag)) for flag in (False, True)}
    assert hecmamba[True] - hecmamba[False] == sum((c + 1) * 3 for c in (8, 8, 8))  # up-blocks at 1/2, 1/4, 1/8
    dynunet = {flag: n_parameters(build("dynunet", flag)) for flag in (False, True)}
    assert dynunet[True] - dynunet[False] == sum((c + 1) * 3 for c in (8, 8))  # filters[1], filters[2]
    # The full-size default is MONAI's DynUNet with nnU-Net's 3d_fullres layout (31.2 M parameters), and deep
    # supervision adds heads on its four decoder levels below full resolution.
    defaults = network_config_defaults("dynunet")
    monai_net = DynUNet(3, 2, 3, defaults["kernel_size"], defaults["strides"], defaults["strides"][1:])
    assert n_parameters(monai_net) == 31_190_307
    full_ds = build_network("dynunet", {"deep_supervision": True})
    assert len(full_ds.net.ds_heads) == 4
    heads = n_parameters(full_ds.net.ds_heads)
    assert heads == sum((c + 1) * 3 for c in (64, 128, 256, 320))
    assert n_parameters(full_ds) - heads == n_parameters(monai_net)


def test_default_dynunet_layout_is_nnunets_for_128_cubed_at_1mm():
    defaults = network_config_defaults("dynunet")
    assert defaults["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5  # six levels, bottleneck 4**3
    assert defaults["kernel_size"] == [[3, 3, 3]] * 6
    assert defaults["filters"] == [32, 64, 128, 256, 320, 320] == dynunet_filters(6)
    assert defaults["norm_name"][0] == "INSTANCE" and defaults["act_name"][0] == "leakyrelu"
    assert build_network("dynunet").divisor == (32, 32, 32)
    # Anisotropic patches (z spacing 3 mm): in-plane convolutions and pooling first, as nnU-Net plans them.
    kernels, strides = dynunet_layout((48, 192, 192), (3.0, 0.8, 0.8))
    assert kernels[0] == [1, 3, 3] and strides[1] == [1, 2, 2]
    assert strides[2] == [2, 2, 2] and kernels[2] == [3, 3, 3]
    assert math.prod(s[0] for s in strides) == 8 and math.prod(s[1] for s in strides) == 32
    with pytest.raises(ValueError, match="fewer than 3 levels"):
        dynunet_layout((6, 6, 6), (1.0, 1.0, 1.0))


def test_dynunet_matches_monai_forward_and_heads():
    torch.manual_seed(0)
    ours = DeepSupervisedDynUNet(2, 3, DYNUNET["kernel_size"], DYNUNET["strides"], DYNUNET["filters"],
                                 deep_supervision=True, deep_supr_num=2)
    reference = DynUNet(3, 2, 3, DYNUNET["kernel_size"], DYNUNET["strides"], DYNUNET["strides"][1:],
                        filters=DYNUNET["filters"], deep_supervision=True, deep_supr_num=2)
    state = {k: v for k, v in ours.dynunet.state_dict().items()}
    state.update({f"deep_supervision_heads.{k[len('ds_heads.'):]}": v for k, v in ours.state_dict().items()
                  if k.startswith("ds_heads.")})
    reference.load_state_dict(state, strict=False)  # MONAI's skip layers alias the same modules
    x = torch.randn(1, 2, 16, 24, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        outputs = ours.train()(x)
        stacked = reference.train()(x)
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x))
    assert stacked.shape == (1, 3, 3, 16, 24, 16)
    torch.testing.assert_close(outputs[0], stacked[:, 0])
    for k in (1, 2):  # MONAI upsamples each head's output (nearest) to full resolution; ours keep their own
        torch.testing.assert_close(F.interpolate(outputs[k], size=(16, 24, 16)), stacked[:, k])


@pytest.mark.parametrize("name", ["hecmamba", "dynunet"])
def test_a_few_training_steps_reduce_the_deep_supervised_loss(name):
    net = build(name, deep_supervision=True).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 16, 16, 32, generator=generator)
    smooth = F.avg_pool3d(x, 3, stride=1, padding=1)
    target = torch.zeros(1, 1, 16, 16, 32)
    target[:, 0][smooth[:, 1] > 0.25] = 1
    target[:, 0][smooth[:, 0] > 0.25] = 2
    # The recommended trainer call: MONAI's DeepSupervisionLoss resizes the target to each output (nearest-exact)
    # and weights the levels with nnU-Net's weights.
    n_outputs = len(net(x))
    criterion = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True),
                                    weights=deep_supervision_weights(n_outputs))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = criterion(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    heads = net.ds_heads if name == "hecmamba" else net.net.ds_heads
    weights = deep_supervision_weights(n_outputs)
    for head, weight in zip(heads, weights[1:]):  # gradients reach every head with a non-zero weight
        assert (head.conv.conv.weight.grad.abs().sum() > 0) == (weight > 0)
    assert losses[-1] < 0.8 * losses[0]


def test_stored_configs_without_the_flag_rebuild_the_plain_network():
    stored = {**HECMAMBA}  # a bundle's model.json from before deep supervision: no "deep_supervision" key
    net = HecMamba(stored)
    assert net.config.deep_supervision is False and net.ds_heads is None
    assert not any("ds_heads" in key for key in net.state_dict())
    assert network_config_defaults("hecmamba")["deep_supervision"] is False
    assert network_config_defaults("dynunet")["deep_supervision"] is False
    with pytest.raises(ValueError, match="deep_supervision needs at least two stages"):
        HecMamba({"widths": [4], "depths": [1], "hidden_size": 4, "deep_supervision": True})
    with pytest.raises(ValueError, match=r"deep_supr_num must be in \[1, 2\]"):
        build_network("dynunet", {**DYNUNET, "deep_supervision": True, "deep_supr_num": 3})

"""Tests of hecktor.networks.fused.FusedFeatureExtractor."""

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet18

from hecktor.networks.fused import TINY_BACKBONE, FusedFeatureExtractor
from hecktor.survival import cox_partial_likelihood_loss

N_CLINICAL = 7


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads, while on a busy runner every OpenMP barrier of a 2-thread
    pool stalls (measured here: 0.8 s instead of 0.01 s per tiny forward). One thread keeps these tests fast."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inputs(batch: int = 3, size: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, size, size, size, generator=g), torch.randn(batch, N_CLINICAL, generator=g)


@pytest.mark.parametrize(
    "mode, image_dim, has_image, has_clinical",
    [("fusion", 32, True, True), ("imaging", 32, True, False), ("clinical", 0, False, True)],
)
def test_tiny_extractor_shapes_in_every_mode(mode, image_dim, has_image, has_clinical):
    torch.manual_seed(0)
    model = FusedFeatureExtractor(N_CLINICAL, mode=mode, **TINY_BACKBONE).eval()
    image, clinical = _inputs()
    image_in = image if has_image else None
    clinical_in = clinical if has_clinical else None
    assert model.image_feature_dim == image_dim
    assert (model.image_encoder is not None) == has_image
    assert (model.clinical_encoder is not None) == has_clinical
    # The fusion MLP's input is the concatenation of the branches: 32 image + 32 clinical features.
    assert model.fusion[0].in_features == image_dim + (32 if has_clinical else 0)
    with torch.no_grad():
        features = model.extract_features(image_in, clinical_in)
        risk = model(image_in, clinical_in)
    assert features.shape == (3, 128)
    assert risk.shape == (3,)
    assert torch.allclose(risk, model.risk_head(features).squeeze(1))
    if has_image:
        assert model.image_features(image).shape == (3, image_dim)


def test_unused_input_is_ignored_and_missing_input_is_an_error():
    torch.manual_seed(0)
    image, clinical = _inputs()
    imaging = FusedFeatureExtractor(0, mode="imaging", **TINY_BACKBONE).eval()
    with torch.no_grad():
        assert torch.equal(imaging(image, clinical), imaging(image, None))
    clinical_only = FusedFeatureExtractor(N_CLINICAL, mode="clinical", **TINY_BACKBONE).eval()
    with torch.no_grad():
        assert torch.equal(clinical_only(image, clinical), clinical_only(None, clinical))
    fusion = FusedFeatureExtractor(N_CLINICAL, mode="fusion", **TINY_BACKBONE)
    with pytest.raises(ValueError, match=r"clinical of shape \(B, 7\)"):
        fusion(image, None)
    with pytest.raises(ValueError, match=r"image of shape \(B, 2, z, y, x\)"):
        fusion(image[:, :1], clinical)
    with pytest.raises(ValueError, match="batch sizes differ"):
        fusion(image, clinical[:2])
    with pytest.raises(ValueError, match="mode must be one of"):
        FusedFeatureExtractor(N_CLINICAL, mode="late")


def test_default_backbone_is_monai_resnet18_with_512_features():
    model = FusedFeatureExtractor(N_CLINICAL).eval()
    reference = resnet18(spatial_dims=3, n_input_channels=2, feed_forward=False)
    ours = {k: v.shape for k, v in model.image_encoder.state_dict().items()}
    assert ours == {k: v.shape for k, v in reference.state_dict().items()}
    assert model.image_feature_dim == 512
    assert model.fusion[0].in_features == 544
    image, clinical = _inputs(batch=2, size=32)
    with torch.no_grad():
        assert model.image_features(image).shape == (2, 512)
        assert model.extract_features(image, clinical).shape == (2, 128)
        assert model(image, clinical).shape == (2,)


def test_config_rebuilds_the_same_network():
    torch.manual_seed(0)
    model = FusedFeatureExtractor(N_CLINICAL, mode="fusion", dropout=0.1, **TINY_BACKBONE).eval()
    rebuilt = FusedFeatureExtractor(**model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    rebuilt.eval()
    image, clinical = _inputs()
    with torch.no_grad():
        assert torch.equal(rebuilt(image, clinical), model(image, clinical))
    assert model.config["backbone_widths"] == [4, 8, 16, 32] and model.config["mode"] == "fusion"


def test_cox_training_steps_learn_a_clinical_risk():
    """A few Adam steps on the Cox loss make the fused risk rank patients by a clinical variable that drives
    their (synthetic) survival: gradients flow through both branches and the loss falls."""
    torch.manual_seed(0)
    n = 32
    image, clinical = _inputs(batch=n, size=12, seed=1)
    true_risk = clinical[:, 0].numpy()
    rng = np.random.default_rng(0)
    time = torch.tensor(rng.exponential(np.exp(-2.0 * true_risk)))
    event = torch.tensor(rng.random(n) < 0.8)
    model = FusedFeatureExtractor(N_CLINICAL, mode="fusion", dropout=0.0, **TINY_BACKBONE)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = cox_partial_likelihood_loss(model(image, clinical), time, event)
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert model.image_encoder.conv1.weight.grad.abs().sum() > 0
    assert model.clinical_encoder[0].weight.grad.abs().sum() > 0
    assert losses[-1] < losses[0] - 1.0
    model.eval()
    with torch.no_grad():
        risk = model(image, clinical).numpy()
    assert np.corrcoef(risk, true_risk)[0, 1] > 0.6

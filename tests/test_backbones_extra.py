"""WRN-28-10 against its paper's size, torchvision's ResNet-18 and timm models against the
libraries' own forward passes with the same weights (read from a local file), and their
one-line errors."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from metalab.backbones.external import TimmBackbone, TorchvisionResNet
from metalab.backbones.wrn import WideResNet
from metalab.errors import ConfigError


def test_wrn_28_10_has_the_papers_size(one_thread):
    # Zagoruyko & Komodakis 2016, Table 5 / README: WRN-28-10 on CIFAR-10 has 36.5M parameters
    net = WideResNet((3, 32, 32), out_dim=10, depth=28, widen=10)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 36.5
    assert net.feature_dim == 640
    small = WideResNet((1, 28, 28), depth=10, widen=1)
    assert small(torch.randn(3, 1, 28, 28)).shape == (3, 64)
    with pytest.raises(ConfigError, match="backbone.depth=27"):
        WideResNet((3, 32, 32), depth=27)


def test_torchvision_resnet18_equals_torchvision_with_local_weights(tmp_path, one_thread):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pt")
    ours = TorchvisionResNet((3, 32, 32), out_dim=None, weights=str(tmp_path / "resnet18.pt"))
    reference.fc = torch.nn.Identity()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), reference.train()(x))  # batch statistics in both
    assert ours.feature_dim == 512
    grey = TorchvisionResNet((1, 28, 28), out_dim=5)  # one channel: its own first convolution
    assert grey(torch.randn(2, 1, 28, 28)).shape == (2, 5)


def test_timm_model_by_name_equals_timm_with_local_weights(tmp_path, one_thread):
    torch.manual_seed(0)
    reference = timm.create_model("test_resnet", pretrained=False)  # with its classifier
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    ours = TimmBackbone((3, 32, 32), model="test_resnet", weights=str(tmp_path / "w.pt"))
    reference.reset_classifier(0)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(x), reference.train()(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda w: TorchvisionResNet((3, 32, 32), weights=w),
        lambda w: TimmBackbone((3, 32, 32), model="test_resnet", weights=w),
    ],
)
def test_missing_or_mismatched_weights_file_is_a_config_error(tmp_path, make):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(ConfigError, match=f"backbone.weights={missing}: no such file"):
        make(str(missing))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="does not fit the model"):
        make(str(tmp_path / "bad.pt"))


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="backbone.model=no_such_net"):
        TimmBackbone((3, 32, 32), model="no_such_net")
    with pytest.raises(ConfigError, match="backbone.arch=vgg11"):
        TorchvisionResNet((3, 32, 32), arch="vgg11")

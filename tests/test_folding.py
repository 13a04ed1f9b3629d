"""Batch norm folded into convolutions: the same function, fewer layers, only where exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptanon.classifiers.efficientnet_lite import fold_same_padding, lite_network
from adaptanon.classifiers.folding import conv_bn_pairs, fold_batch_norms
from adaptanon.io import read_image, to_image

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def trained_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    """A batch norm with non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn


class Branchy(nn.Module):
    """conv -> bn (foldable); a conv whose output also feeds a residual (not foldable); a
    batch norm after a ReLU (not foldable); a depthwise conv with a bias -> bn (foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = trained_bn(6, 1)
        self.conv2 = nn.Conv2d(6, 6, 1)
        self.bn2 = trained_bn(6, 2)
        self.bn3 = trained_bn(6, 3)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn4 = trained_bn(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        y = self.conv2(x)
        x = self.bn2(y) + y
        x = self.bn3(torch.relu(x))
        return self.bn4(self.dw(x))


def branchy(dtype: torch.dtype, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return Branchy().to(device, dtype).eval()


@pytest.mark.parametrize("dtype", DTYPES)
def test_folding_keeps_the_function_and_drops_the_foldable_batch_norms(device, dtype):
    plain, folded = branchy(dtype, device), branchy(dtype, device)
    assert conv_bn_pairs(folded) == [("conv1", "bn1"), ("dw", "bn4")]
    assert fold_batch_norms(folded) == 2
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.bn4, nn.Identity)
    assert isinstance(folded.bn2, nn.BatchNorm2d) and isinstance(folded.bn3, nn.BatchNorm2d)
    x = torch.randn(2, 3, 9, 11, device=device, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), plain(x), rtol=TOL[dtype], atol=TOL[dtype])
    assert folded.conv1.bias is not None and folded.conv1.bias.dtype == dtype
    assert folded.conv1.weight.device.type == device.type


def test_folded_input_gradients_are_the_plain_ones(device):
    plain, folded = branchy(torch.float64, device), branchy(torch.float64, device)
    fold_batch_norms(folded)
    x = torch.randn(1, 3, 6, 7, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: folded(t).square().sum(), (x,))
    (g_folded,) = torch.autograd.grad(folded(x).square().sum(), [x])
    (g_plain,) = torch.autograd.grad(plain(x).square().sum(), [x])
    torch.testing.assert_close(g_folded, g_plain, rtol=1e-10, atol=1e-10)


def test_requires_grad_is_kept():
    model = branchy(torch.float32, torch.device("cpu"))
    for p in model.parameters():
        p.requires_grad_(False)
    fold_batch_norms(model)
    assert not any(p.requires_grad for p in model.parameters())


def test_a_conv_called_twice_is_not_folded():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = trained_bn(3, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.conv(x)

    model = Twice().eval()
    assert fold_batch_norms(model) == 0 and isinstance(model.bn, nn.BatchNorm2d)


def test_an_untraceable_model_is_left_alone():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = trained_bn(3, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            return y if y.sum() > 0 else -y

    model = DataDependent().eval()
    assert conv_bn_pairs(model) == []
    assert fold_batch_norms(model) == 0 and isinstance(model.bn, nn.BatchNorm2d)


def test_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(Branchy().train())


def test_a_conv_subclass_with_its_own_forward_is_one_leaf():
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = Conv2dStaticSamePadding(3, 4, 3, stride=1, image_size=8, bias=False)
            self.bn = trained_bn(4, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x))

    plain, folded = Block().double().eval(), Block().double().eval()
    folded.load_state_dict(plain.state_dict())
    assert fold_batch_norms(folded) == 1
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(folded(x), plain(x), rtol=1e-12, atol=1e-12)


class StandardisedConv(nn.Conv2d):
    """A convolution that standardises its weight in ``forward`` (as timm's StdConv2d):
    scaling the weight, as folding does, would be undone."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / w.std(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


class ActivatedConv(nn.Conv2d):
    """A convolution with a ReLU inside its ``forward``: a batch norm after it does not
    commute with the ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


@pytest.mark.parametrize("conv_class", [StandardisedConv, ActivatedConv])
def test_a_conv_that_is_more_than_a_convolution_is_not_folded(conv_class):
    torch.manual_seed(0)
    model = nn.Sequential(conv_class(3, 4, 3, padding=1), trained_bn(4, 8)).eval()
    plain = nn.Sequential(conv_class(3, 4, 3, padding=1), trained_bn(4, 8)).eval()
    plain.load_state_dict(model.state_dict())
    assert conv_bn_pairs(model) == [("0", "1")]  # the graph alone would fold it
    assert fold_batch_norms(model) == 0 and isinstance(model[1], nn.BatchNorm2d)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


@pytest.mark.parametrize(("stride", "moved"), [(1, 1), (2, 0)])
def test_same_padding_moves_into_the_conv_only_when_symmetric(stride, moved):
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    torch.manual_seed(0)
    plain = Conv2dStaticSamePadding(3, 4, 3, stride=stride, image_size=8).double()
    moved_conv = Conv2dStaticSamePadding(3, 4, 3, stride=stride, image_size=8).double()
    moved_conv.load_state_dict(plain.state_dict())
    assert fold_same_padding(moved_conv) == moved
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(moved_conv(x), plain(x))


def test_the_built_in_model_is_the_published_network_folded(lite0, demo_photo):
    """No batch norm is left in the built-in Lite0, and on a photo its logits are the
    published network's up to float rounding."""
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lite0.model.modules())
    published = lite_network("efficientnet_lite0").to(lite0.device)
    image = to_image(read_image(demo_photo("coffee.png"))).to(lite0.device)
    with torch.no_grad():
        x = lite0.inputs([image])
        mine, theirs = lite0.forward(x), published(x)
    assert mine.argmax() == theirs.argmax()
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)

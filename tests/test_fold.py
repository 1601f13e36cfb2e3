"""gpudnn.nn.fold.fold_batchnorm: an eval-mode BatchNorm2d folded into the preceding conv gives
the unfused modules' outputs, leaves the originals untouched, and refuses what cannot fold."""
import copy

import pytest
import torch
from torch import nn

import gpudnn
from gpudnn.nn.fold import fold_batchnorm
from gpudnn.testing import assert_close


def _eval_bn(channels, gen, affine=True):
    bn = nn.BatchNorm2d(channels, affine=affine, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.5)
        if affine:
            bn.weight.copy_(torch.randn(channels, generator=gen))
            bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn.eval()


@pytest.mark.parametrize("transposed,groups,bias,affine", [
    (False, 1, True, True), (False, 2, False, True), (False, 1, True, False),
    (True, 1, True, True), (True, 2, False, True),
])
def test_fold_matches_unfused_torch(transposed, groups, bias, affine):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if transposed:
        conv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, groups=groups, bias=bias)
    else:
        conv = nn.Conv2d(4, 6, 3, padding=1, groups=groups, bias=bias)
    bn = _eval_bn(6, gen, affine)
    before = copy.deepcopy((conv.state_dict(), bn.state_dict()))
    folded = fold_batchnorm(conv, bn)
    assert type(folded) is type(conv) and folded is not conv and folded.bias is not None
    x = torch.randn(2, 4, 5, 7, generator=gen)
    with torch.no_grad():
        want = bn(conv(x))
        got = folded(x)
    assert_close(got, want, torch.float32, scale=6.0)
    for original, saved in zip((conv, bn), before):  # the originals are untouched
        for key, value in original.state_dict().items():
            assert torch.equal(value, saved[key]), key


def test_fold_gpudnn_conv_bn_relu_runs_as_one_kernel(device):
    """Conv -> BN -> ReLU in eval, converted with folding: one fused conv, same outputs."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), _eval_bn(5, gen), nn.ReLU()).eval()
    fused = gpudnn.nn.convert(model, inplace=False, fold_batchnorm=True).to(device)
    assert isinstance(fused[0], gpudnn.nn.Conv2d) and fused[0].activation is not None
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[2], nn.Identity)
    x = torch.randn(2, 3, 6, 5, generator=gen)
    with torch.no_grad(), gpudnn.use_backend("triton"):
        got = fused(x.to(device))
    with torch.no_grad():
        want = model(x)
    assert_close(got, want, torch.float32, scale=6.0)


def test_fold_hands_bn_activation_to_conv():
    gen = torch.Generator().manual_seed(2)
    conv = gpudnn.nn.Conv2d(2, 3, 1)
    bn = gpudnn.nn.BatchNorm2d(3)
    bn.load_state_dict(_eval_bn(3, gen).state_dict())
    bn.eval()
    bn.activation = gpudnn.activations.parse_activation("tanh")
    folded = fold_batchnorm(conv, bn)
    assert folded.activation == bn.activation and conv.activation is None
    with pytest.raises(ValueError, match="torch.nn conv"):
        fold_batchnorm(nn.Conv2d(2, 3, 1), bn)


def test_fold_refuses_what_cannot_fold():
    gen = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(2, 3, 1)
    with pytest.raises(ValueError, match="training"):
        fold_batchnorm(conv, nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(conv, nn.BatchNorm2d(3, track_running_stats=False).eval())
    with pytest.raises(ValueError, match="features"):
        fold_batchnorm(conv, _eval_bn(4, gen))
    with pytest.raises(TypeError):
        fold_batchnorm(nn.Linear(2, 3), _eval_bn(3, gen))
    with pytest.raises(ValueError, match="activation"):
        fold_batchnorm(gpudnn.nn.Conv2d(2, 3, 1, activation="relu"), _eval_bn(3, gen))

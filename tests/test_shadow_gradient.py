"""ExactWithShadowGradient gives exactly the gradients of the float shadow it replaces: autograd
through op(x, w, b), masked by SaturatingSTE (or by `inside` alone), for every layer kind."""
import pytest
import torch

from cqtf.train.layers import (ExactWithShadowGradient, QuantConv1d, QuantConv2d, QuantDepthwiseConv2d,
                               QuantLinear, SaturatingSTE)

LAYERS = {
    "conv2d": (lambda: QuantConv2d(3, 5, 3, stride=2, padding=1), (4, 3, 9, 7)),
    "conv2d_1x1": (lambda: QuantConv2d(4, 6, 1), (2, 4, 5, 5)),
    "conv1d": (lambda: QuantConv1d(2, 4, 5, stride=1, padding=2), (3, 2, 1, 11)),
    "depthwise": (lambda: QuantDepthwiseConv2d(4, 3, stride=1, padding=1), (2, 4, 6, 6)),
    "depthwise_strided": (lambda: QuantDepthwiseConv2d(3, 3, stride=2, padding=0), (2, 3, 7, 8)),
    "linear": (lambda: QuantLinear(12, 5), (6, 12)),
}


def _masks(shape, gen):
    r = torch.rand(shape, generator=gen)
    return r < 0.6, (r >= 0.6) & (r < 0.8), r >= 0.8  # inside, high, low


def _grads(out, params, upstream):
    return torch.autograd.grad((out * upstream).sum(), params, allow_unused=True)


@pytest.mark.parametrize("saturation_aware", [True, False])
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_gradients_equal_the_masked_float_shadow(kind, saturation_aware):
    gen = torch.Generator().manual_seed(7)
    make, in_shape = LAYERS[kind]
    layer = make()
    layer.saturation_aware = saturation_aware
    x = torch.randn(in_shape, generator=gen, requires_grad=True)
    w = (layer.inner.weight.detach() + 0.1).requires_grad_(True)
    b = torch.randn(layer.inner.bias.shape, generator=gen, requires_grad=True)
    shadow = layer.op(x, w, b)
    inside, high, low = _masks(shadow.shape, gen)
    upstream = torch.randn(shadow.shape, generator=gen)
    masked = SaturatingSTE.apply(shadow, inside, high, low) if saturation_aware else shadow * inside.float()
    expected = _grads(masked, (x, w, b), upstream)

    exact = torch.randn(shadow.shape, generator=gen)  # any forward value: gradients must not depend on it
    out = ExactWithShadowGradient.apply([exact], x, w, b, inside, high, low, layer)
    assert torch.equal(out, exact)
    got = _grads(out, (x, w, b), upstream)
    for name, e, g in zip("xwb", expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=f"d/d{name} differs")


def test_an_input_without_gradient_gets_none():
    layer = QuantConv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 4, 4)  # the network's input: no gradient wanted
    w = layer.inner.weight.detach().clone().requires_grad_(True)
    ones = torch.ones(1, 3, 4, 4, dtype=torch.bool)
    out = ExactWithShadowGradient.apply([torch.zeros(1, 3, 4, 4)], x, w, None, ones, ~ones, ~ones, layer)
    (gw,) = torch.autograd.grad(out.sum(), (w,))
    assert gw.shape == w.shape and gw.abs().sum() > 0


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_no_masks_means_everything_inside(kind):
    """inside=None (the forward saw nothing leave the range) passes the gradient as an all-True mask."""
    gen = torch.Generator().manual_seed(11)
    make, in_shape = LAYERS[kind]
    layer = make()
    x = torch.randn(in_shape, generator=gen, requires_grad=True)
    w = layer.inner.weight.detach().clone().requires_grad_(True)
    b = torch.randn(layer.inner.bias.shape, generator=gen, requires_grad=True)
    shape = layer.op(x, w, b).shape
    upstream = torch.randn(shape, generator=gen)
    exact = torch.randn(shape, generator=gen)
    ones = torch.ones(shape, dtype=torch.bool)
    masked = _grads(ExactWithShadowGradient.apply([exact], x, w, b, ones, None, None, layer), (x, w, b), upstream)
    unmasked = _grads(ExactWithShadowGradient.apply([exact], x, w, b, None, None, None, layer), (x, w, b), upstream)
    for name, e, g in zip("xwb", masked, unmasked):
        assert torch.equal(g, e), f"d/d{name} differs"

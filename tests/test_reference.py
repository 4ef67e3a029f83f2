"""The numpy host reference against a plain-Python, element-by-element reading of cqtf_types.h."""
import itertools

import numpy as np
import pytest

from cqtf import reference
from cqtf.fixedpoint import requantize_scalar
from random_models import random_conv_layer


def naive_conv(x, layer):
    (kh, kw), (sh, sw), (pt, pl) = layer.kernel, layer.stride, layer.pad
    out_h, out_w, out_c = layer.out_shape
    in_h, in_w, in_c = layer.in_shape
    out = np.zeros(layer.out_shape, np.int8)
    for y, x_, oc in itertools.product(range(out_h), range(out_w), range(out_c)):
        acc = int(layer.bias[oc])
        for ky, kx, ic in itertools.product(range(kh), range(kw), range(in_c)):
            iy, ix = y * sh - pt + ky, x_ * sw - pl + kx
            if 0 <= iy < in_h and 0 <= ix < in_w:
                acc += (int(x[iy, ix, ic]) + layer.input_offset) * int(layer.weights[oc, ky, kx, ic])
        value = requantize_scalar(acc, int(layer.multiplier[oc]), int(layer.shift[oc])) + layer.output_offset
        out[y, x_, oc] = min(max(value, layer.act_min), layer.act_max)
    return out


@pytest.mark.parametrize("seed,k,stride,pad,relu", [
    (0, 3, 1, 1, True), (1, 3, 2, 1, False), (2, 1, 1, 0, True), (3, 5, 2, 2, False), (4, 3, 1, 0, True),
    (5, 2, 2, 0, False),
])
def test_conv_matches_naive(seed, k, stride, pad, relu):
    rng = np.random.default_rng(seed)
    layer = random_conv_layer(rng, 7, 6, 3, 4, k, stride, pad, relu)
    x = rng.integers(-128, 128, (2, 7, 6, 3)).astype(np.int8)
    got = reference.conv2d(x, layer)
    for n in range(2):
        assert np.array_equal(got[n], naive_conv(x[n], layer))


def test_conv_saturates_at_both_ends():
    rng = np.random.default_rng(9)
    layer = random_conv_layer(rng, 5, 5, 4, 3, 3, 1, 1, relu=False)
    layer.multiplier[:] = 2**31 - 1
    layer.shift[:] = 5  # huge gain: most outputs clip to -128 or 127
    x = rng.integers(-128, 128, (1, 5, 5, 4)).astype(np.int8)
    got = reference.conv2d(x, layer)
    assert (got == 127).any() and (got == -128).any()
    assert np.array_equal(got[0], naive_conv(x[0], layer))

"""Fixed-point profiles train the float phase in the data's units, then fold the ratio into the first layer."""
import numpy as np
import pytest
import torch

from cqtf.data import fixed_input_quant, InputQuant
from cqtf.profile import get_profile
from cqtf.train.model import build_model, input_frac_bits


def _fixed_model(seed: int):
    torch.manual_seed(seed)
    profile = get_profile("fixed8")
    raw = InputQuant(np.float32(0.0393), 12)
    quant = fixed_input_quant(raw, input_frac_bits(profile))
    return build_model("mnist1d_cnn", (1, 40, 1), 10, quant, profile), quant


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_keeps_the_function(seed):
    model, quant = _fixed_model(seed)
    x = torch.from_numpy(np.random.default_rng(seed).integers(-128, 128, (16, 1, 40, 1)).astype(np.int8))
    model.train_in_data_units()
    assert model.float_input_gain == pytest.approx(float(quant.scale) / 2.0 ** -6)
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.fold_input_gain()
        after = model(x)
    assert model.float_input_gain == 1.0
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_inputs_in_data_units_while_unfolded():
    """Before folding, the first layer sees q * data scale, as an int8 model's float phase does."""
    model, quant = _fixed_model(3)
    model.train_in_data_units()
    act = model.input_act(torch.full((1, 1, 40, 1), 10, dtype=torch.int8))
    assert float(act.value.flatten()[0]) == pytest.approx(10 * float(quant.scale), rel=1e-6)


def test_quantizing_before_folding_is_refused():
    model, _ = _fixed_model(4)
    model.train_in_data_units()
    model.set_quantized(True)
    with pytest.raises(RuntimeError, match="fold_input_gain"):
        model.input_act(torch.zeros((1, 1, 40, 1), dtype=torch.int8))


def test_int8_profiles_keep_their_inputs():
    torch.manual_seed(0)
    model = build_model("digits_cnn", (8, 8, 1), 10, InputQuant(np.float32(0.06), -128), get_profile("int8"))
    model.train_in_data_units()
    assert model.float_input_gain == 1.0

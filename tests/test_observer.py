"""RangeObserver: its float mirror and its saved buffers tell the same range at every state dict."""
import torch

from cqtf.train.layers import RangeObserver


def _saved(observer: RangeObserver):
    state = observer.state_dict()
    return bool(state["initialized"]), float(state["lo"]), float(state["hi"])


def test_state_dict_holds_every_observation_and_loads_back():
    observer = RangeObserver(momentum=0.25)
    assert _saved(observer)[0] is False
    observer.observe(torch.tensor([-1.0, 3.0]))
    assert _saved(observer) == (True, -1.0, 3.0)
    observer.observe_range(-3.0, 7.0)  # EMA: -1 + 0.25 (-3 + 1), 3 + 0.25 (7 - 3)
    assert observer.range() == (-1.5, 4.0) and _saved(observer) == (True, -1.5, 4.0)

    restored = RangeObserver()
    restored.load_state_dict(observer.state_dict())
    assert restored.range() == (-1.5, 4.0)
    assert restored.qparams() == observer.qparams()


def test_reset_is_saved_and_calibration_takes_extremes():
    observer = RangeObserver()
    observer.observe_range(-2.0, 2.0)
    observer.reset()
    assert _saved(observer)[0] is False
    observer.calibrating = True
    observer.observe_range(-1.0, 0.5)
    observer.observe_range(-0.5, 2.5)
    assert _saved(observer) == (True, -1.0, 2.5)


def test_qparams_follow_the_range():
    observer = RangeObserver(momentum=0.5)
    observer.observe_range(0.0, 1.0)
    first = observer.qparams()
    observer.observe_range(0.0, 3.0)
    assert observer.qparams() != first and observer.qparams().scale > first.scale

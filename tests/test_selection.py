"""The shipped network is the candidate most accurate on held-out training data, ties to the earlier one."""
import copy

import numpy as np
import pytest
import torch

from cqtf import reference
from cqtf.data import Dataset, InputQuant, hold_out
from cqtf.errors import DataError
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from cqtf.train.selection import AS_IS, SIGNIFICANCE, BestState, sign_test_p
from random_models import random_inputs, random_network


def _dataset(network, seed: int) -> Dataset:
    x = random_inputs(seed, 64, (9, 7, 2))
    y = reference.predict(logits_int8(network, x)).astype(np.int64)  # labels the network gets right
    return Dataset("toy", x, y, x[:8], y[:8], InputQuant(np.float32(0.1), 0), 5)


def _arrays(data: Dataset):
    return data.x_train, data.y_train


def test_a_worse_epoch_is_not_kept_and_the_restored_state_exports_exactly():
    network = random_network(2)
    data = _dataset(network, 3)
    best = BestState(network, data.x_train, data.y_train)
    assert best.scores[0]["heldout_accuracy"] == 1.0
    good = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(-1.0)  # a ruinous step
    best.score(1)
    assert best.scores[1]["heldout_accuracy"] < 1.0
    restored, log = best.restore()
    assert restored is network and log["epoch"] == 0
    assert all(torch.equal(good[k], v) for k, v in network.state_dict().items())
    x = random_inputs(9, 32, (9, 7, 2))
    assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))


def test_an_equally_accurate_later_epoch_does_not_displace_the_earlier_one():
    network = random_network(4)
    best = BestState(network, *_arrays(_dataset(network, 5)))
    best.score(1)  # the same state: a tie in everything
    correct, loss = best.best_correct, best.scores[0]["heldout_loss"]
    best._evaluate = lambda model: (correct.copy(), loss / 10)  # as accurate, far more confident
    best.score(2)
    assert best.restore()[1]["epoch"] == 0


def test_a_more_accurate_later_epoch_wins():
    network = random_network(6)
    data = _dataset(network, 7)
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(-1.0)
    best = BestState(network, data.x_train, data.y_train)  # epoch 0: the ruined network
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(-1.0)  # back to the network that labelled the data
    best.score(1)
    assert best.scores[1]["heldout_accuracy"] > best.scores[0]["heldout_accuracy"]
    assert best.restore()[1]["epoch"] == 1


def test_the_network_deployed_as_is_wins_ties_and_ships_unchanged():
    network = random_network(8)
    data = _dataset(network, 9)
    as_is = copy.deepcopy(network)
    best = BestState(network, *_arrays(data), as_is=as_is)  # epoch 0: the same network, a tie
    best.score(1)
    restored, log = best.restore()
    assert restored is as_is and log["epoch"] == AS_IS
    assert [row["epoch"] for row in log["scores"]] == [AS_IS, 0, 1]


def test_a_trained_epoch_beats_a_worse_network_deployed_as_is():
    network = random_network(10)
    data = _dataset(network, 11)
    as_is = copy.deepcopy(network)
    with torch.no_grad():
        for p in as_is.parameters():
            p.mul_(-1.0)  # the as-is network is ruined, the trained one labelled the data
    best = BestState(network, *_arrays(data), as_is=as_is)
    restored, log = best.restore()
    assert restored is network and log["epoch"] == 0
    assert log["scores"][0]["heldout_accuracy"] < log["scores"][1]["heldout_accuracy"]


def test_hold_out_is_stratified_disjoint_and_repeatable():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(200, 3, 3, 1), dtype=np.int8)
    x[:, 0, 0, 0] = np.arange(200) % 128  # with the row index below, each sample is unique
    x[:, 0, 1, 0] = np.arange(200) // 128
    y = np.repeat(np.arange(4), 50).astype(np.int64)
    data = Dataset("toy", x, y, x[:5], y[:5], InputQuant(np.float32(0.1), 0), 4)
    fit, x_held, y_held = hold_out(data, 0.2, seed=3)
    assert len(x_held) == 40 and len(fit.x_train) == 160
    assert np.bincount(y_held).tolist() == [10, 10, 10, 10]
    keys = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert not keys(fit.x_train) & keys(x_held) and len(keys(fit.x_train) | keys(x_held)) == 200
    again = hold_out(data, 0.2, seed=3)[1]
    assert np.array_equal(again, x_held) and not np.array_equal(hold_out(data, 0.2, seed=4)[1], x_held)
    assert fit.x_test is data.x_test
    assert hold_out(data, 0.0, seed=3)[0] is data


def test_hold_out_of_a_class_too_small_to_split_is_a_clear_error():
    x = np.zeros((5, 2, 2, 1), dtype=np.int8)
    y = np.array([0, 0, 0, 0, 1])
    data = Dataset("toy", x, y, x, y, InputQuant(np.float32(0.1), 0), 2)
    with pytest.raises(DataError, match="hold out"):
        hold_out(data, 0.4, seed=0)


def test_the_sign_test_is_the_binomial_tail():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == 1 / 32
    assert sign_test_p(3, 1) == 5 / 16  # 4 or 3 heads of 4: (1 + 4) / 16
    for n in range(1, 30):  # the tail shrinks as the wins grow, and P(>= 0) is certain
        tails = [sign_test_p(w, n - w) for w in range(n + 1)]
        assert tails[0] == 1.0 and all(a > b for a, b in zip(tails, tails[1:]))


def _scripted(best: BestState, outcomes: list[np.ndarray]) -> None:
    for epoch, correct in enumerate(outcomes, start=1):
        best._evaluate = lambda model, c=correct: (c, 0.0)
        best.score(epoch)


def test_a_later_epoch_must_win_beyond_chance():
    network = random_network(12)
    best = BestState(network, *_arrays(_dataset(network, 13)))
    kept = np.ones(len(best.x), dtype=bool)
    kept[:10] = False  # what epoch 0 got right, as if it missed the first 10 samples
    best.best_correct = kept
    one_better = kept.copy()
    one_better[0] = True  # 1 win, no loss: p = 1/2
    swapped = kept.copy()
    swapped[:3], swapped[-2:] = True, False  # 3 wins, 2 losses: noise
    clearly = kept.copy()
    clearly[:5] = True  # 5 wins, no loss: p = 1/32
    _scripted(best, [one_better, swapped, clearly])
    log = best.restore()[1]
    assert [row["p_vs_kept"] for row in log["scores"][1:]] == [0.5, sign_test_p(3, 2), 1 / 32]
    assert all(p > SIGNIFICANCE for p in (0.5, sign_test_p(3, 2))) and log["epoch"] == 3

"""The quantized phase keeps its best device-exact state, scored on training data only."""
import numpy as np
import torch

from cqtf import reference
from cqtf.data import Dataset, InputQuant
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from cqtf.train.selection import BestState
from random_models import random_inputs, random_network


def _dataset(network, seed: int) -> Dataset:
    x = random_inputs(seed, 64, (9, 7, 2))
    y = reference.predict(logits_int8(network, x)).astype(np.int64)  # labels the network gets right
    return Dataset("toy", x, y, x[:8], y[:8], InputQuant(np.float32(0.1), 0), 5)


def test_a_worse_epoch_is_not_kept_and_the_restored_state_exports_exactly():
    network = random_network(2)
    data = _dataset(network, 3)
    best = BestState(network, data)
    assert best.scores[0]["train_accuracy"] == 1.0
    good = {k: v.clone() for k, v in network.state_dict().items()}
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(-1.0)  # a ruinous step
    best.score(1)
    assert best.scores[1]["train_accuracy"] < 1.0
    log = best.restore()
    assert log["epoch"] == 0
    assert all(torch.equal(good[k], v) for k, v in network.state_dict().items())
    x = random_inputs(9, 32, (9, 7, 2))
    assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))


def test_an_equally_accurate_later_epoch_does_not_displace_the_earlier_one():
    network = random_network(4)
    best = BestState(network, _dataset(network, 5))
    best.score(1)  # the same state: a tie in everything
    accuracy, loss = best.scores[0]["train_accuracy"], best.scores[0]["train_loss"]
    best._evaluate = lambda: (accuracy, loss / 10)  # as accurate, far more confident on the training data
    best.score(2)
    assert best.restore()["epoch"] == 0


def test_a_more_accurate_later_epoch_wins():
    network = random_network(6)
    data = _dataset(network, 7)
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(-1.0)
    best = BestState(network, data)  # epoch 0: the ruined network
    with torch.no_grad():
        for p in network.parameters():
            p.mul_(-1.0)  # back to the network that labelled the data
    best.score(1)
    assert best.scores[1]["train_accuracy"] > best.scores[0]["train_accuracy"]
    assert best.restore()["epoch"] == 1

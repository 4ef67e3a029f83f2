"""What a framework hands over for deployment."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cqtf.model_ir import IntModel


@dataclass
class FrameworkModel:
    framework: str               # e.g. "torch.ao QAT"
    training_accuracy: float     # what the framework reports at training time (float, or its fake-quant model)
    predictions: np.ndarray      # (N,) predictions of that training-time model on the test set
    int_model: IntModel          # the device's integers for this model
    framework_int8_accuracy: float | None = None  # the framework's own int8 model on the host, if it has one
    float_params: list[dict] | None = None  # trained float weight/bias of each conv/linear, to deploy elsewhere

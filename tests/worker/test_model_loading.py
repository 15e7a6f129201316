"""The model contract: build_model or CNN, the model's own loss, the static check first, and
failures in the model's code recognised as code errors with its own lines in the traceback."""

from __future__ import annotations

import pytest
import torch

from service.schemas import exit_codes
from worker.errors import ModelCodeError, classify
from worker.model_loading import check_outputs, load_model

BUILD_MODEL = """
import torch
from torch import nn


def build_model(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def loss_function(outputs, targets):
    return nn.functional.cross_entropy(outputs, targets) * 2
"""

CNN_WITHOUT_ARGS = """
from torch import nn


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""

CNN_WITH_LOSS_METHOD = """
import torch
from torch import nn


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def loss_function(self, outputs, targets):
        return nn.CrossEntropyLoss(label_smoothing=0.1)(outputs, targets)
"""

RAISES_IN_FORWARD = """
from torch import nn


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(16384, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))  # 3*32*32 = 3072 features, not 16384
"""


def test_build_model_and_module_level_loss() -> None:
    loaded = load_model(BUILD_MODEL, (3, 32, 32), 7)
    out = loaded.model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert loaded.custom_loss
    y = torch.tensor([0, 1])
    expected = torch.nn.functional.cross_entropy(out, y) * 2
    assert torch.allclose(loaded.loss_fn(out, y), expected)


def test_cnn_built_without_arguments_and_default_loss_with_smoothing() -> None:
    loaded = load_model(CNN_WITHOUT_ARGS, (3, 32, 32), 10, label_smoothing=0.2)
    assert not loaded.custom_loss
    out = loaded.model(torch.zeros(4, 3, 32, 32))
    y = torch.zeros(4, dtype=torch.long)
    expected = torch.nn.functional.cross_entropy(out, y, label_smoothing=0.2)
    assert torch.allclose(loaded.loss_fn(out, y), expected)


def test_cnn_num_classes_and_loss_method() -> None:
    loaded = load_model(CNN_WITH_LOSS_METHOD, (3, 32, 32), 100)
    assert loaded.model(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    assert loaded.custom_loss
    out, y = torch.randn(3, 100), torch.tensor([1, 2, 3])
    expected = torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1)
    assert torch.allclose(loaded.loss_fn(out, y), expected)


def test_hash_mismatch_is_a_bad_spec() -> None:
    with pytest.raises(Exception) as info:
        load_model(CNN_WITHOUT_ARGS, (3, 32, 32), 10, expected_sha256="0" * 64)
    assert classify(info.value).exit_code == exit_codes.BAD_SPEC


def test_missing_contract_is_a_code_error() -> None:
    with pytest.raises(ModelCodeError, match="neither build_model"):
        load_model("from torch import nn\n\nclass Net(nn.Module):\n    pass\n", (3, 32, 32), 10)


def test_static_check_runs_before_import() -> None:
    source = "import os\nos.system('touch /tmp/gradpilot-should-not-exist')\n" + CNN_WITHOUT_ARGS
    with pytest.raises(ModelCodeError, match="static check") as info:
        load_model(source, (3, 32, 32), 10)
    assert classify(info.value).kind == "code"


def test_forward_error_is_a_code_error_with_the_models_lines() -> None:
    loaded = load_model(RAISES_IN_FORWARD, (3, 32, 32), 10)
    with pytest.raises(RuntimeError) as info:
        loaded.model(torch.zeros(2, 3, 32, 32))
    failure = classify(info.value)
    assert failure.kind == "code" and failure.exit_code == exit_codes.CODE_ERROR
    assert "return self.fc(x.flatten(1))  # 3*32*32" in failure.traceback
    assert "<gradpilot-model" in failure.traceback


def test_wrong_output_shape_is_a_code_error() -> None:
    with pytest.raises(ModelCodeError, match=r"expected \(2, 10\)"):
        check_outputs(torch.zeros(2, 5), 2, 10)


def test_infrastructure_errors_are_not_code_errors() -> None:
    assert classify(ConnectionError("reset")).kind == "infrastructure"
    assert classify(MemoryError()).exit_code == exit_codes.INFRASTRUCTURE_ERROR

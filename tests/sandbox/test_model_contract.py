"""The model contract shared by the sandbox's child and the worker."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from service.errors import SandboxRejected
from service.sandbox.model_contract import exec_model_source, load_model_module
from tests.sandbox.good_models import BLOG_STYLE, BUILD_MODEL, IDIOMS


def test_build_model_contract() -> None:
    build, loss = load_model_module(BUILD_MODEL, "contract_build")
    model = build((3, 16, 16), 7)
    assert isinstance(model, nn.Module)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    assert loss is None


def test_cnn_without_num_classes_is_built_bare() -> None:
    contract = load_model_module(BLOG_STYLE, "contract_blog")
    model = contract.build((3, 32, 32), 10)
    assert type(model).__name__ == "CNN"
    assert contract.loss_for(model) is None


def test_cnn_with_num_classes_and_loss_method() -> None:
    source = (
        "import torch.nn as nn\n"
        "class CNN(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, num_classes)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n"
        "    def loss_function(self, outputs, targets):\n"
        "        return nn.functional.cross_entropy(outputs, targets) * 2\n"
    )
    contract = load_model_module(source, "contract_cnn")
    model = contract.build((4,), 3)
    assert model.fc.out_features == 3
    loss = contract.loss_for(model)
    assert loss is not None
    outputs = model(torch.randn(2, 4))
    assert loss(outputs, torch.tensor([0, 1])).dim() == 0


def test_module_level_loss_function() -> None:
    source = BUILD_MODEL + "\ndef loss_function(outputs, targets):\n    return outputs.sum()\n"
    contract = load_model_module(source, "contract_loss")
    assert contract.loss_function is not None
    assert contract.loss_for(contract.build((3, 8, 8), 2)) is contract.loss_function


def test_idioms_model_with_dataclasses_loads() -> None:
    contract = load_model_module(IDIOMS, "contract_idioms")
    model = contract.build((3, 32, 32), 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert contract.loss_for(model) is not None


def test_missing_contract_is_rejected() -> None:
    with pytest.raises(SandboxRejected, match="neither build_model"):
        load_model_module("import torch\nx = 1\n", "contract_missing")


def test_static_check_runs_first() -> None:
    with pytest.raises(SandboxRejected, match="`import os`"):
        load_model_module("import os\n" + BUILD_MODEL, "contract_os")


def test_model_errors_keep_their_model_frames() -> None:
    source = BUILD_MODEL + "\nraise ValueError('broken on purpose')\n"
    with pytest.raises(ValueError, match="broken on purpose") as caught:
        load_model_module(source, "contract_raises", filename="<model test>")
    assert any(entry.path == "<model test>" for entry in caught.traceback)


def test_restricted_builtins_hold_even_without_the_static_check() -> None:
    with pytest.raises(ImportError, match="may not import 'os'"):
        exec_model_source("import os\n", "contract_guard")
    with pytest.raises(NameError, match="open"):
        exec_model_source("open('/etc/hostname')\n", "contract_guard")


def test_module_names_of_real_modules_are_refused() -> None:
    with pytest.raises(ValueError, match="taken"):
        load_model_module(BUILD_MODEL, "torch")

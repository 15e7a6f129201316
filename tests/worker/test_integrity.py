"""A model cannot change the training loop's loss or accuracy arithmetic.

With the static check switched off (so that the model's Python runs unhindered in the trainer),
a model that replaces ``torch.Tensor.argmax`` or ``F.cross_entropy`` — to report an accuracy or
a loss it did not earn — fails the job as a code error before any forged summary is sent; the
metrics are computed with references the model cannot reach (``torch._C.TensorBase``'s methods,
torch's cross-entropy kernel); and a tensor subclass that would override the arithmetic through
``__torch_function__`` is refused by the model contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.schemas import exit_codes
from tests.support.factories import TINY_CNN, make_spec
from tests.support.fake_api import FakeApi, run_in_process

PATCH_ARGMAX = TINY_CNN.replace(
    "    def forward(self, x):\n",
    """    def forward(self, x):
        if self.training:
            def always_right(tensor, dim=None, keepdim=False):
                return torch.zeros(tensor.shape[0], dtype=torch.long)
            torch.Tensor.argmax = always_right
""",
)

PATCH_LOSS = TINY_CNN.replace(
    "    def forward(self, x):\n",
    """    def forward(self, x):
        import torch.nn.functional as F
        F.cross_entropy = lambda outputs, targets, *a, **k: (outputs * 0).sum()
""",
)

SUBCLASS = TINY_CNN.replace(
    "        return self.fc(torch.flatten(x, 1))",
    """        class Honest(torch.Tensor):
            pass
        return self.fc(torch.flatten(x, 1)).as_subclass(Honest)""",
)


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADPILOT_UNSAFE_DISABLE_STATIC_CHECK", "1")


@pytest.mark.parametrize(
    ("source", "named"),
    [(PATCH_ARGMAX, "torch.Tensor.argmax"), (PATCH_LOSS, "torch.nn.functional.cross_entropy")],
)
def test_a_model_that_patches_the_metrics_fails_before_reporting(
    api: FakeApi,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unchecked: None,
    source: str,
    named: str,
) -> None:
    spec = make_spec(tmp_path, source=source, epochs=2)
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.CODE_ERROR
    assert api.epochs("job-1") == [], "a forged summary reached the API"
    ((_, finish),) = api.finishes
    assert finish["error_kind"] == "code"
    assert named in finish["message"] and "may not patch torch" in finish["message"]


def test_a_tensor_subclass_output_is_refused(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unchecked: None
) -> None:
    spec = make_spec(tmp_path, source=SUBCLASS, epochs=1)
    assert run_in_process(api, spec, tmp_path, monkeypatch) == exit_codes.CODE_ERROR
    ((_, finish),) = api.finishes
    assert "tensor subclass" in finish["message"]


def test_the_loops_metrics_ignore_a_patched_argmax_and_cross_entropy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between two integrity checks the arithmetic itself is out of the model's reach."""
    import torch.nn.functional as F

    from service.sandbox.model_contract import default_loss
    from worker.training import _count_correct

    outputs = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    loss_fn = default_loss()
    want_loss = F.cross_entropy(outputs, targets)
    monkeypatch.setattr(torch.Tensor, "argmax", lambda self, dim=None, keepdim=False: targets)
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: torch.tensor(0.0))
    assert int(_count_correct(outputs, targets)) == 2  # not 3, as the patch would say
    assert torch.allclose(loss_fn(outputs, targets), want_loss)
    with pytest.raises(TypeError):
        torch._C.TensorBase.argmax = lambda *a, **k: targets  # type: ignore[method-assign]

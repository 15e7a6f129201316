"""Claude on Bedrock, scripted: Converse replies (tool use, text, usage), a botocore
``Stubber`` on the advisor's client that records every request, and what the scripted model
says (an assessment, a design that fails the sandbox and the one that fixes it).

langchain-aws's request building, structured output and usage parsing all run for real
against it; only the HTTP exchange with Bedrock is scripted.
"""

from __future__ import annotations

import copy
from typing import Any

from botocore.stub import Stubber

#: The Bedrock model id, and the advisor spec that names it.
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
SPEC = f"bedrock:{MODEL}"

# --------------------------------------------------------------------------- replies


def converse_reply(
    content: list[dict[str, Any]], stop: str, tokens: tuple[int, int]
) -> dict[str, Any]:
    """A Converse response: the assistant's content blocks, stop reason and token usage."""
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": tokens[0], "outputTokens": tokens[1], "totalTokens": sum(tokens)},
        "metrics": {"latencyMs": 850},
    }


def tool_reply(
    name: str, args: dict[str, Any], tokens: tuple[int, int] = (1500, 300)
) -> dict[str, Any]:
    """The model calls tool ``name`` with ``args`` (how structured output comes back)."""
    block = {"toolUse": {"toolUseId": f"tooluse_{name}", "name": name, "input": args}}
    return converse_reply([block], "tool_use", tokens)


def text_reply(text: str, tokens: tuple[int, int] = (900, 60)) -> dict[str, Any]:
    """The model answers in plain text."""
    return converse_reply([{"text": text}], "end_turn", tokens)


class ScriptedBedrock:
    """A Stubber on the advisor's bedrock-runtime client, plus a record of every request."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.stubber = Stubber(client)
        self.requests: list[dict[str, Any]] = []
        client.meta.events.register("before-parameter-build.bedrock-runtime.Converse", self._record)
        self.stubber.activate()

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(copy.deepcopy(params))

    def reply(self, response: dict[str, Any]) -> ScriptedBedrock:
        self.stubber.add_response("converse", response)
        return self

    def error(self, code: str, message: str, status: int) -> ScriptedBedrock:
        self.stubber.add_client_error(
            "converse", service_error_code=code, service_message=message, http_status_code=status
        )
        return self

    def user_text(self, index: int = -1) -> str:
        request = self.requests[index]
        return "\n".join(
            block.get("text", "")
            for message in request["messages"]
            if message["role"] == "user"
            for block in message["content"]
        )

    def system_text(self, index: int = -1) -> str:
        return "\n".join(block.get("text", "") for block in self.requests[index]["system"])

    def done(self) -> None:
        self.stubber.assert_no_pending_responses()
        self.stubber.deactivate()


# --------------------------------------------------------------------------- what the model says

#: The ``HealthAssessment`` tool's arguments for a network with vanishing gradients.
ASSESSMENT = {
    "gradient_analysis": {
        "gradient_issues": ["vanishing gradients"],
        "affected_layers": ["0.weight"],
        "severity": 5,
        "insights": "The first layer's gradient is 1.2e-7 of the last layer's.",
    },
    "stability_assessment": {
        "is_stable": False,
        "stability_score": 2,
        "explanation": "Validation accuracy is at chance after 6 epochs",
        "remaining_issues": ["near chance accuracy"],
        "recommendation": "redesign",
    },
}

#: A redesign that fails the sandbox (its linear layer assumes 16x16 after two poolings).
BROKEN_DESIGN = """\
import torch
from torch import nn
import torch.nn.functional as F


class CNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 16 * 16, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(torch.flatten(x, 1))
"""

#: The fixer's design: sizes from the input shape.
FIXED_DESIGN = """\
import torch
from torch import nn


def build_model(input_shape, num_classes):
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
    )
"""

"""Deploys ``infra/gradpilot.yaml`` with CloudFormation and turns its outputs into settings.

``deploy_stack`` creates the stack or updates it (an unchanged template is not an error),
waits for CloudFormation while reporting each new stack event, and returns the outputs.
``settings_from_outputs`` maps them to the ``GRADPILOT_*`` variables the API and controller
need. ``gradpilot infra deploy`` (``service/cli/infra.py``) is the command line over both.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.aws import (
    SDK_ERRORS,
    AwsFailure,
    AwsFault,
    ErrorFamily,
    classify_aws_error,
    make_client,
    translate_aws_error,
)
from service.errors import ConfigurationError, GradpilotError, InvalidInput

DEFAULT_STACK_NAME = "gradpilot"
#: The template travels with the source tree (the repository, the Docker image's /app).
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "infra" / "gradpilot.yaml"

_STACK_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"}
_FAILED = {
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "DELETE_COMPLETE",
    "DELETE_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_FAILED",
    "IMPORT_ROLLBACK_COMPLETE",
    "IMPORT_ROLLBACK_FAILED",
}


class DeployError(GradpilotError):
    """CloudFormation refused the stack or rolled it back; the message names the resource."""

    status_code = 502


@dataclass(frozen=True)
class StackEvent:
    """One line of progress: a resource (or the stack) changing status."""

    logical_id: str
    resource_type: str
    status: str
    reason: str | None


def check_stack_name(stack_name: str) -> None:
    """Stack names become ECR, queue and job definition names: lowercase, short."""
    if not _STACK_NAME.match(stack_name):
        raise InvalidInput(
            f"stack name {stack_name!r} must be 1-40 lowercase letters, digits or '-', starting "
            "with a letter (it names the ECR repository, which must be lowercase)"
        )


def default_template() -> Path:
    """``infra/gradpilot.yaml`` beside the source tree, else under the working directory (an
    installed package, as in the image, whose working directory /app holds ``infra/``)."""
    if DEFAULT_TEMPLATE.exists():
        return DEFAULT_TEMPLATE
    return Path.cwd() / "infra" / "gradpilot.yaml"


def load_template(path: Path | None = None) -> str:
    template = path or default_template()
    try:
        return template.read_text()
    except OSError as e:
        raise ConfigurationError(
            f"cannot read the CloudFormation template {template}: run from the gradpilot source "
            "tree or pass --template infra/gradpilot.yaml"
        ) from e


def template_parameters(body: str) -> dict[str, Any]:
    """The template's ``Parameters`` section (names → declarations)."""

    class _Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms (!Ref, !Sub, ...) are plain YAML tags: keep their values.
    def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)  # type: ignore[arg-type]

    _Loader.add_multi_constructor("!", _any_tag)
    document = yaml.load(body, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    return dict(document.get("Parameters") or {})


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` → ``{"K": "V"}``; a pair without ``=`` is refused."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--param takes KEY=VALUE, got {pair!r}")
        params[key.strip()] = value
    return params


def cloudformation_client(endpoint_url: str | None, region: str) -> Any:
    """A boto3 ``cloudformation`` client with adaptive retries (moto at ``endpoint_url``)."""
    return make_client("cloudformation", region=region, endpoint_url=endpoint_url)


def deploy_stack(
    params: Mapping[str, str] | None = None,
    *,
    endpoint_url: str | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
    region: str = "us-east-1",
    wait: bool = True,
    template_path: Path | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 5.0,
    on_event: Callable[[StackEvent], None] | None = None,
    client: Any = None,
) -> dict[str, str]:
    """Create or update the stack and return its outputs (``{}`` when ``wait`` is False).

    ``params`` are template parameters by name; unknown names are refused with the list of
    known ones. CloudFormation keeps the previous value of a parameter not given on an update.
    """
    check_stack_name(stack_name)
    body = load_template(template_path)
    declared = template_parameters(body)
    given = dict(params or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidInput(
            f"unknown template parameter(s) {', '.join(unknown)}; the template takes "
            + ", ".join(sorted(declared))
        )
    cfn = client or cloudformation_client(endpoint_url, region)
    existing = _describe(cfn, stack_name)
    started = time.time()
    if existing is not None and existing["StackStatus"] in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):
        raise DeployError(
            f"stack {stack_name} is in {existing['StackStatus']} after a failed creation and "
            f"cannot be updated: delete it (aws cloudformation delete-stack --stack-name "
            f"{stack_name}) and deploy again"
        )
    if existing is None:
        _create(cfn, stack_name, body, given)
    else:
        # Parameters not given keep their previous value; those still at the template's
        # default are left out (they stay at it; moto cannot "use the previous value" of a
        # parameter that was never passed).
        keep = [
            {"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
            for p in existing.get("Parameters", [])
            if p["ParameterKey"] not in given
            and p["ParameterKey"] in declared
            and str(p.get("ParameterValue", ""))
            != str(declared[p["ParameterKey"]].get("Default", ""))
        ]
        if not _update(cfn, stack_name, body, given, keep):
            return outputs_of(_describe(cfn, stack_name) or {}) if wait else {}
    if not wait:
        return {}
    stack = _wait(cfn, stack_name, started, timeout_s, poll_s, on_event)
    return outputs_of(stack)


def read_outputs(
    *,
    endpoint_url: str | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
    region: str = "us-east-1",
    client: Any = None,
) -> dict[str, str]:
    """The outputs of an existing stack (NotFound-like DeployError when there is none)."""
    cfn = client or cloudformation_client(endpoint_url, region)
    stack = _describe(cfn, stack_name)
    if stack is None:
        raise DeployError(f"no stack named {stack_name}: run `gradpilot infra deploy` first")
    return outputs_of(stack)


def outputs_of(stack: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])}


def settings_from_outputs(
    outputs: Mapping[str, str], *, endpoint_url: str | None = None, region: str | None = None
) -> dict[str, str]:
    """The ``GRADPILOT_*`` settings that point the service at the deployed stack."""
    settings = {
        "GRADPILOT_EXECUTOR": "batch",
        "GRADPILOT_BATCH_JOB_QUEUE": outputs["JobQueueName"],
        "GRADPILOT_BATCH_JOB_DEFINITION": outputs["JobDefinitionName"],
        "GRADPILOT_ARTIFACT_URL": outputs["ArtifactUrl"],
        "GRADPILOT_AWS_REGION": outputs.get("Region") or region or "us-east-1",
    }
    if endpoint_url:
        settings["GRADPILOT_AWS_ENDPOINT_URL"] = endpoint_url
    return settings


# -- CloudFormation calls -------------------------------------------------------------------


def _parameters(given: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(given.items())]


def _create(cfn: Any, stack_name: str, body: str, given: Mapping[str, str]) -> None:
    _call(
        cfn,
        "create_stack",
        StackName=stack_name,
        TemplateBody=body,
        Parameters=_parameters(given),
        Capabilities=["CAPABILITY_IAM"],
        OnFailure="ROLLBACK",
        Tags=[{"Key": "gradpilot:stack", "Value": stack_name}],
    )


def _update(
    cfn: Any,
    stack_name: str,
    body: str,
    given: Mapping[str, str],
    keep: list[dict[str, Any]],
) -> bool:
    """Start an update; False when CloudFormation says nothing changed."""
    try:
        cfn.update_stack(
            StackName=stack_name,
            TemplateBody=body,
            Parameters=_parameters(given) + keep,
            Capabilities=["CAPABILITY_IAM"],
        )
    except SDK_ERRORS as e:
        if "No updates are to be performed" in classify_aws_error(e).message:
            return False
        raise _translate(e, "update_stack") from e
    return True


def _describe(cfn: Any, stack_name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except SDK_ERRORS as e:
        if classify_aws_error(e).fault is AwsFault.NOT_FOUND:
            return None
        raise _translate(e, "describe_stacks") from e
    return dict(stacks[0]) if stacks else None


def _wait(
    cfn: Any,
    stack_name: str,
    started: float,
    timeout_s: float,
    poll_s: float,
    on_event: Callable[[StackEvent], None] | None,
) -> dict[str, Any]:
    seen: set[str] = set()
    while True:
        events = _new_events(cfn, stack_name, started, seen)
        if on_event:
            for event in events:
                on_event(event)
        stack = _describe(cfn, stack_name)
        if stack is None:
            raise DeployError(f"stack {stack_name} disappeared while deploying")
        status = stack["StackStatus"]
        if status in _DONE:
            return stack
        if status in _FAILED:
            reasons = [
                f"{e.logical_id} ({e.resource_type}): {e.reason}"
                for e in _new_events(cfn, stack_name, started, set())
                if e.status.endswith("FAILED") and e.reason
            ]
            detail = "; ".join(reversed(reasons)) or stack.get("StackStatusReason") or status
            raise DeployError(f"stack {stack_name} ended in {status}: {detail}")
        if time.time() - started > timeout_s:
            raise DeployError(
                f"stack {stack_name} is still {status} after {timeout_s:.0f} s; it goes on in "
                "CloudFormation: watch it with `aws cloudformation describe-stack-events`"
            )
        time.sleep(poll_s)


def _new_events(cfn: Any, stack_name: str, started: float, seen: set[str]) -> list[StackEvent]:
    """Events of this deployment not reported yet, oldest first."""
    try:
        raw = cfn.describe_stack_events(StackName=stack_name).get("StackEvents", [])
    except SDK_ERRORS:
        return []  # progress is a nicety; the stack status decides
    fresh: list[StackEvent] = []
    for event in raw:
        stamp = event.get("Timestamp")
        if stamp is not None and hasattr(stamp, "timestamp") and stamp.timestamp() < started - 5:
            continue
        if event["EventId"] in seen:
            continue
        seen.add(event["EventId"])
        fresh.append(
            StackEvent(
                logical_id=event.get("LogicalResourceId", ""),
                resource_type=event.get("ResourceType", ""),
                status=event.get("ResourceStatus", ""),
                reason=event.get("ResourceStatusReason"),
            )
        )
    return list(reversed(fresh))


def _call(cfn: Any, operation: str, **kwargs: Any) -> Any:
    try:
        return getattr(cfn, operation)(**kwargs)
    # moto answers some CloudFormation errors in JSON, which botocore cannot parse as XML.
    except SDK_ERRORS as e:
        raise _translate(e, operation) from e


#: Credentials are a setting to fix before deploying; everything else is the deployment's.
_FAMILY = ErrorFamily(error=DeployError, credentials=ConfigurationError)


def _hint(failure: AwsFailure) -> str | None:
    if failure.fault is AwsFault.ACCESS_DENIED:
        return "The deploying identity needs the permissions listed in infra/README.md."
    if failure.transient:
        return "deploy again in a minute (an unchanged stack is not redeployed)"
    return None


def _translate(error: Exception, operation: str) -> GradpilotError:
    return translate_aws_error(
        error, service="CloudFormation", operation=operation, family=_FAMILY, hint=_hint
    )

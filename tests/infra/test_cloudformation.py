"""infra/gradpilot.yaml: passes cfn-lint, deploys to moto, and creates what the service needs;
``gradpilot infra deploy`` prints the settings."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from service.cli.infra import app as infra_app
from service.errors import InvalidInput
from service.executors.batch import retry_strategy
from service.infra import (
    DEFAULT_TEMPLATE,
    DeployError,
    deploy_stack,
    settings_from_outputs,
    template_parameters,
)
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = Path(sys.executable).with_name("cfn-lint")


def _template() -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]

    Loader.add_multi_constructor("!", tag)
    return yaml.load(DEFAULT_TEMPLATE.read_text(), Loader=Loader)  # noqa: S506


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws(config={"batch": {"use_docker": False}}), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # moto: no model for S3 BucketPolicy
        yield


# -- the template itself ----------------------------------------------------------------------


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CFN_LINT), str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def test_cfn_lint_passes() -> None:
    result = _cfn_lint(DEFAULT_TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    text = DEFAULT_TEMPLATE.read_text()
    assert "AllocationStrategy: SPOT_PRICE_CAPACITY_OPTIMIZED" in text
    broken.write_text(
        text.replace(
            "AllocationStrategy: SPOT_PRICE_CAPACITY_OPTIMIZED", "AllocationStrategy: CHEAPEST"
        )
    )
    assert _cfn_lint(broken).returncode != 0


def test_the_template_retry_strategy_is_the_executors() -> None:
    definition = _template()["Resources"]["WorkerJobDefinition"]["Properties"]
    strategy = definition["RetryStrategy"]
    as_api = {
        "attempts": strategy["Attempts"],
        "evaluateOnExit": [
            {key[0].lower() + key[1:]: value for key, value in rule.items()}
            for rule in strategy["EvaluateOnExit"]
        ],
    }
    assert as_api == retry_strategy()
    assert definition["Timeout"]["AttemptDurationSeconds"] == {"Ref": "JobTimeoutSeconds"}


def test_the_job_role_has_no_s3_access() -> None:
    """Artifacts are job-scoped through pre-signed URLs: the job's role reaches no S3 at all."""
    role = _template()["Resources"]["JobRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    actions = [
        action
        for policy in role.get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    ]
    assert not [a for a in actions if a.lower().startswith("s3:") or a == "*"], actions


def test_the_bucket_is_encrypted_and_private() -> None:
    bucket = _template()["Resources"]["ArtifactBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}


# -- deployed into moto -----------------------------------------------------------------------


def test_deploys_to_moto_with_everything_the_service_needs(aws: None, tmp_path: Path) -> None:
    events: list[Any] = []
    outputs = deploy_stack({"ArtifactBucketName": "gp-artifacts"}, poll_s=0, on_event=events.append)

    cfn = boto3.client("cloudformation", region_name="us-east-1")
    assert cfn.describe_stacks(StackName="gradpilot")["Stacks"][0]["StackStatus"] == (
        "CREATE_COMPLETE"
    )
    assert events and events[-1].status == "CREATE_COMPLETE"
    assert outputs["JobQueueName"] == "gradpilot-gpu"
    assert outputs["JobDefinitionName"] == "gradpilot-worker"
    assert outputs["ArtifactUrl"] == "s3://gp-artifacts/gradpilot"
    assert outputs["RepositoryUri"].endswith("/gradpilot-worker")

    batch = boto3.client("batch", region_name="us-east-1")
    (queue,) = batch.describe_job_queues(jobQueues=["gradpilot-gpu"])["jobQueues"]
    environments = {
        c["computeEnvironmentArn"]: c
        for c in batch.describe_compute_environments()["computeEnvironments"]
    }
    ordered = sorted(queue["computeEnvironmentOrder"], key=lambda o: o["order"])
    spot, on_demand = (environments[o["computeEnvironment"]] for o in ordered)
    assert spot["computeResources"]["type"] == "SPOT"
    assert spot["computeResources"]["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert on_demand["computeResources"]["type"] == "EC2"
    assert on_demand["computeResources"]["allocationStrategy"] == "BEST_FIT_PROGRESSIVE"
    for env in (spot, on_demand):
        resources = env["computeResources"]
        assert resources["minvCpus"] == 0
        assert resources["instanceTypes"] == [
            "g6.xlarge",
            "g6.2xlarge",
            "g6.4xlarge",
            "g6.8xlarge",
            "g6.12xlarge",
        ]
        assert len(resources["subnets"]) == 2  # the stack's own VPC

    (definition,) = batch.describe_job_definitions(
        jobDefinitionName="gradpilot-worker", status="ACTIVE"
    )["jobDefinitions"]
    container = definition["containerProperties"]
    assert {"type": "GPU", "value": "1"} in container["resourceRequirements"]
    assert container["command"] == ["python", "-m", "worker"]
    assert container["logConfiguration"]["options"]["awslogs-group"] == outputs["LogGroupName"]
    assert container["jobRoleArn"].split("/")[-1].startswith("gradpilot-JobRole")
    rules = definition["retryStrategy"]["evaluateOnExit"]
    assert [{**r, "action": r["action"].upper()} for r in rules] == retry_strategy()[
        "evaluateOnExit"
    ]

    logs = boto3.client("logs", region_name="us-east-1")
    (group,) = logs.describe_log_groups(logGroupNamePrefix=outputs["LogGroupName"])["logGroups"]
    assert group["retentionInDays"] == 30
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.get_bucket_encryption(Bucket="gp-artifacts")["ServerSideEncryptionConfiguration"]
    ecr = boto3.client("ecr", region_name="us-east-1")
    assert ecr.describe_repositories(repositoryNames=["gradpilot-worker"])["repositories"]

    # The printed settings make a valid batch configuration.
    env = settings_from_outputs(outputs)
    settings = Settings(
        home=tmp_path,
        executor=env["GRADPILOT_EXECUTOR"],  # type: ignore[arg-type]
        batch_job_queue=env["GRADPILOT_BATCH_JOB_QUEUE"],
        batch_job_definition=env["GRADPILOT_BATCH_JOB_DEFINITION"],
        artifact_url=env["GRADPILOT_ARTIFACT_URL"],
    )
    assert settings.resolved_artifact_url == "s3://gp-artifacts/gradpilot"


def test_without_spot_the_queue_has_only_on_demand(aws: None) -> None:
    deploy_stack({"UseSpot": "false"}, stack_name="nospot", poll_s=0)
    batch = boto3.client("batch", region_name="us-east-1")
    (queue,) = batch.describe_job_queues(jobQueues=["nospot-gpu"])["jobQueues"]
    (order,) = queue["computeEnvironmentOrder"]
    (env,) = batch.describe_compute_environments(computeEnvironments=[order["computeEnvironment"]])[
        "computeEnvironments"
    ]
    assert env["computeResources"]["type"] == "EC2"
    assert not [
        e
        for e in batch.describe_compute_environments()["computeEnvironments"]
        if e["computeResources"]["type"] == "SPOT"
    ]


def test_an_existing_vpc_is_used_instead_of_a_new_one(aws: None) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24")["Subnet"]["SubnetId"]
        for i in range(2)
    ]
    before = len(ec2.describe_vpcs()["Vpcs"])

    deploy_stack({"VpcId": vpc, "SubnetIds": ",".join(subnets)}, stack_name="byovpc", poll_s=0)

    assert len(ec2.describe_vpcs()["Vpcs"]) == before
    batch = boto3.client("batch", region_name="us-east-1")
    for env in batch.describe_compute_environments()["computeEnvironments"]:
        assert sorted(env["computeResources"]["subnets"]) == sorted(subnets)


def test_deploying_again_updates_the_stack(aws: None) -> None:
    first = deploy_stack({"ArtifactBucketName": "gp-artifacts"}, poll_s=0)
    assert deploy_stack({}, poll_s=0) == first  # nothing changed: not an error

    deploy_stack({"MaxVcpus": "96"}, poll_s=0)

    cfn = boto3.client("cloudformation", region_name="us-east-1")
    stack = cfn.describe_stacks(StackName="gradpilot")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    params = {p["ParameterKey"]: p.get("ParameterValue") for p in stack["Parameters"]}
    assert params["MaxVcpus"] == "96"
    assert params["ArtifactBucketName"] == "gp-artifacts"  # kept from the first deploy


def test_a_failing_stack_is_a_clear_error(aws: None) -> None:
    with pytest.raises(DeployError, match="subnet-12345678"):
        deploy_stack(
            {"VpcId": "vpc-12345678", "SubnetIds": "subnet-12345678"}, stack_name="bad", poll_s=0
        )


def test_unknown_parameters_and_bad_stack_names_are_refused(aws: None) -> None:
    with pytest.raises(InvalidInput, match="MaxVcpus"):
        deploy_stack({"MaxCpus": "8"}, poll_s=0)
    with pytest.raises(InvalidInput, match="lowercase"):
        deploy_stack({}, stack_name="GradPilot", poll_s=0)
    assert "UseSpot" in template_parameters(DEFAULT_TEMPLATE.read_text())


# -- the command line ------------------------------------------------------------------------


def test_cli_deploy_prints_the_settings(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GRADPILOT_AWS_ENDPOINT_URL", "GRADPILOT_AWS_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    runner = CliRunner()
    result = runner.invoke(infra_app, ["deploy", "--param", "ArtifactBucketName=gp-cli", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["settings"] == {
        "GRADPILOT_EXECUTOR": "batch",
        "GRADPILOT_BATCH_JOB_QUEUE": "gradpilot-gpu",
        "GRADPILOT_BATCH_JOB_DEFINITION": "gradpilot-worker",
        "GRADPILOT_ARTIFACT_URL": "s3://gp-cli/gradpilot",
        "GRADPILOT_AWS_REGION": "us-east-1",
    }

    shown = runner.invoke(infra_app, ["settings"])
    assert shown.exit_code == 0, shown.output
    assert "export GRADPILOT_BATCH_JOB_QUEUE=gradpilot-gpu" in shown.stdout
    assert "export GRADPILOT_ARTIFACT_URL=s3://gp-cli/gradpilot" in shown.stdout


def test_cli_reports_errors_without_a_traceback(aws: None) -> None:
    result = CliRunner().invoke(infra_app, ["deploy", "--param", "NoEquals"])
    assert result.exit_code == 1
    assert "KEY=VALUE" in result.output
    assert "Traceback" not in result.output

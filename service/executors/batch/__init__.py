"""The ``batch`` executor: workers as AWS Batch jobs, through boto3.

- ``executor``: :class:`BatchExecutor`, the :class:`~service.executors.Executor` itself.
- ``jobs``: the job builder (job names, container overrides, retry strategy, array jobs).
- ``client``: the boto3 wrapper; botocore retries throttling and 5xx only, and failures become
  ``ExecutorError`` / ``TransientExecutorError`` (through ``service.aws``).
- ``status``: Batch's job descriptions read as executor states and CloudWatch log locations.
"""

from service.errors import TransientExecutorError
from service.executors.batch.client import DEFAULT_LOG_GROUP, DESCRIBE_BATCH, make_batch_client
from service.executors.batch.executor import BatchExecutor
from service.executors.batch.jobs import (
    BATCH_ATTEMPTS,
    WORKER_COMMAND,
    resource_requirements,
    retry_strategy,
    worker_command,
)
from service.executors.batch.status import (
    CANCEL_PREFIX,
    is_infrastructure_failure,
    parse_log_location,
)
from service.schemas.worker_env import ARRAY_INDEX, ARRAY_VARS, resolve_array_environment

__all__ = [
    "ARRAY_INDEX",
    "ARRAY_VARS",
    "BATCH_ATTEMPTS",
    "CANCEL_PREFIX",
    "DEFAULT_LOG_GROUP",
    "DESCRIBE_BATCH",
    "WORKER_COMMAND",
    "BatchExecutor",
    "TransientExecutorError",
    "is_infrastructure_failure",
    "make_batch_client",
    "parse_log_location",
    "resolve_array_environment",
    "resource_requirements",
    "retry_strategy",
    "worker_command",
]

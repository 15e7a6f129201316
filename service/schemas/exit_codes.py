"""The worker's exit codes: its contract with the scheduler.

AWS Batch's job definition retries ``RETRYABLE`` exits and spot reclaims (``Host EC2*``) and
never ``CODE_ERROR``; the local executor and the controller read them the same way.
"""

SUCCESS = 0
#: The model's own code raised (shape mismatch, bad forward): retrying cannot help; repair it.
CODE_ERROR = 3
#: Data, network, out-of-memory or other infrastructure failure: retrying may help.
INFRASTRUCTURE_ERROR = 4
#: Stopped by SIGTERM (spot reclaim, cancel) after writing a checkpoint: retry resumes.
PREEMPTED = 5
#: The job spec could not be fetched or is invalid: retrying will not help.
BAD_SPEC = 6

RETRYABLE: frozenset[int] = frozenset({INFRASTRUCTURE_ERROR, PREEMPTED})

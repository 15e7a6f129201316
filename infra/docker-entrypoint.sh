#!/bin/sh
# Entrypoint of the gradpilot image (Dockerfile.worker).
#
#   no arguments          run the training worker: python -m worker
#   any arguments         run them: gradpilot serve ..., gradpilot controller, alembic ...,
#                         torchrun --nproc_per_node=N -m worker (several GPUs)
#
# A child of an AWS Batch array job (service.executors.batch.BatchExecutor.submit_array) gets
# the same environment as its siblings; GRADPILOT_ARRAY_VARS lists the variables whose value
# for this child is in <NAME>__<AWS_BATCH_JOB_ARRAY_INDEX>. They are resolved here, as
# service.executors.batch.resolve_array_environment does, before the worker starts.
set -eu

if [ -n "${GRADPILOT_ARRAY_VARS:-}" ] && [ -n "${AWS_BATCH_JOB_ARRAY_INDEX:-}" ]; then
  index="$AWS_BATCH_JOB_ARRAY_INDEX"
  case "$index" in
    *[!0-9]*) echo "gradpilot-entrypoint: bad AWS_BATCH_JOB_ARRAY_INDEX '$index'" >&2; exit 6 ;;
  esac
  saved_ifs=$IFS
  IFS=,
  for name in $GRADPILOT_ARRAY_VARS; do
    # Names go through eval below: accept identifiers only (exit 6 = bad spec, not retried).
    case "$name" in
      "" | [!A-Za-z_]* | *[!A-Za-z0-9_]*)
        echo "gradpilot-entrypoint: bad name '$name' in GRADPILOT_ARRAY_VARS" >&2; exit 6 ;;
    esac
    eval "present=\${${name}__${index}+yes}"
    if [ "$present" = yes ]; then
      eval "${name}=\${${name}__${index}}"
      export "${name?}"
    else
      unset "$name"
    fi
  done
  IFS=$saved_ifs
fi

if [ "$#" -eq 0 ]; then
  set -- python -m worker
fi
exec "$@"

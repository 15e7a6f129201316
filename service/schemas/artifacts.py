"""Job-scoped artifact access: the URLs the control plane hands one job's worker.

On S3 these are pre-signed URLs, each good for one method on one key for a short while, so the
worker needs no S3 permission of its own; on a ``file://`` store they are the objects'
``file://`` URLs (the local worker reads and writes the folder directly).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

#: A checkpoint's name in its job's folder: ``e<next epoch>-s<step>.pt``; names sort by position.
CHECKPOINT_NAME = re.compile(r"^e(\d{6,})-s(\d{7,})\.pt$")


class ObjectUrls(BaseModel):
    """One object: its stored URL and what the worker may do to it."""

    name: str = Field(description="The object's name inside the job's checkpoint folder.")
    url: str = Field(description="The object's URL as stored (s3://… or file://…).")
    get: str | None = Field(None, description="URL to download it.")
    put: str | None = Field(None, description="URL to upload it (HTTP PUT).")
    delete: str | None = Field(None, description="URL to delete it (HTTP DELETE).")


class ArtifactUrls(BaseModel):
    """What ``GET /v1/jobs/{id}/artifact-urls`` answers."""

    checkpoint_prefix: str = Field(
        description="URL of the job's own checkpoint folder; it registers only URLs under it."
    )
    expires_in_s: int = Field(description="Seconds the pre-signed URLs stay valid.")
    checkpoints: list[ObjectUrls] = Field(
        default_factory=list, description="The job's checkpoints, oldest first (get, delete)."
    )
    uploads: list[ObjectUrls] = Field(
        default_factory=list, description="The names asked for with ?put=…, with PUT URLs."
    )
    resume: ObjectUrls | None = Field(None, description="The spec's resume checkpoint (get).")
    dataset: ObjectUrls | None = Field(None, description="The data set file, when stored (get).")

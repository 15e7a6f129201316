"""Names in a run's advisor spec (``<provider>:<model>``) that more than one layer reads.

The run operations check a spec at creation and the LLM advisor builds its model from it; they
sit in different layers, so the names live here, below both.
"""

from __future__ import annotations

#: advisor providers that name Amazon Bedrock (``bedrock:<model or inference profile id>``)
BEDROCK_PROVIDERS: frozenset[str] = frozenset({"bedrock", "bedrock_converse", "aws"})

"""The agent state's records mirror the advisors' types they are dumps of."""

from __future__ import annotations

import dataclasses

from service.advisors._protocol import Assessment, Usage
from service.agent.state import (
    AssessmentRecord,
    UsageRecord,
    assessment_record,
    usage_of,
    usage_record,
)


def test_an_assessment_record_is_the_assessments_json_dump() -> None:
    assert set(AssessmentRecord.__annotations__) == set(Assessment.model_fields)
    assessment = Assessment(
        gradient_issues=["vanishing_gradients"],
        affected_layers=["0.weight", "9.weight"],
        severity=4,
        is_stable=False,
        stability_score=3,
        explanation="gradients vanish",
        recommendation="redesign",
    )
    record = assessment_record(assessment)
    assert record == assessment.model_dump(mode="json")
    assert Assessment.model_validate(record) == assessment


def test_a_usage_record_round_trips() -> None:
    assert set(UsageRecord.__annotations__) == {f.name for f in dataclasses.fields(Usage)}
    usage = Usage(input_tokens=1200, output_tokens=300, latency_ms=850, model="m", fallback=True)
    assert usage_record(usage) == usage.__dict__
    assert usage_of(usage_record(usage)) == usage
    assert usage_of(None) == usage_of({}) == Usage()

"""Job payload contracts (shared/contracts): the producer's cheap constructor builds what pydantic's would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from shared import contracts


def test_trusted_builds_the_same_payload_as_model_construct() -> None:
    """Every channel job and the timer: same fields, same fields-set, same JSON payload, and it reads back."""
    fields = dict(task_id=uuid.uuid4(), case_id=uuid.uuid4(), channel="auto_call", attempt=2, tier="high",
                  phone="+8613800138000", region_code="330106", fraud_type="other",
                  due_at=datetime(2026, 12, 3, 5, 30, tzinfo=UTC), reason="plan start")
    for cls in (contracts.PlaceCall, contracts.SendAlert, contracts.OperatorCall, contracts.VisitRequest):
        slow, fast = cls.model_construct(**fields), cls.trusted(**fields)
        assert fast == slow and fast.model_fields_set == slow.model_fields_set
        assert fast.as_payload() == slow.as_payload()
        assert cls.model_validate(fast.as_payload()) == cls.model_validate(slow.as_payload())
    window = contracts.CallWindow(start="08:00", end="21:00")
    call = contracts.PlaceCall.trusted(**fields, call_window=window)
    assert call.as_payload()["call_window"] == window.model_dump(mode="json")
    timer = contracts.TaskTimer.trusted(task_id=fields["task_id"], plan_seq=3, step="channel:auto_call")
    assert timer.as_payload() == contracts.TaskTimer.model_construct(
        task_id=fields["task_id"], plan_seq=3, step="channel:auto_call").as_payload()

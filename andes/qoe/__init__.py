"""Quality of experience (QoE) of streamed responses: every QoE figure in Andes comes from here."""

from andes.qoe.metric import (DigestState, RequestOutcome, RequestStatus, ServiceSummary, delivered_tds, digest_times,
                              expected_area, final_qoe_with, live_qoe, measured_ttft, project_qoe, qoe,
                              qoe_from_state, qoe_many, summarize)

__all__ = [
    "DigestState",
    "RequestOutcome",
    "RequestStatus",
    "ServiceSummary",
    "delivered_tds",
    "digest_times",
    "expected_area",
    "final_qoe_with",
    "live_qoe",
    "measured_ttft",
    "project_qoe",
    "qoe",
    "qoe_from_state",
    "qoe_many",
    "summarize",
]

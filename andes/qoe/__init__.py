"""Quality of experience (QoE) of streamed responses: every QoE figure in Andes comes from here.

``metric``: the QoE of a request and its three forms (from token times, incremental, projected);
``reader``: a reader who changes pace or pauses mid-answer (segments);
``outcomes``: what requests experienced and the service-level summary over many of them.
"""

from andes.qoe.metric import (DigestState, digest_times, expected_area, final_qoe_with, live_qoe, project_qoe, qoe,
                              qoe_from_state, qoe_many)
from andes.qoe.reader import PAUSE_HORIZON_S, change_reader
from andes.qoe.outcomes import (RequestOutcome, RequestStatus, ServiceSummary, delivered_tds, measured_ttft,
                                summarize)

__all__ = [
    "DigestState",
    "PAUSE_HORIZON_S",
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
    "change_reader",
    "summarize",
]

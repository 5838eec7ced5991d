"""What a finished simulation reports: token times, QoE and outcomes, read from ``SimCore``'s arrays.

A mixin, apart from the engine's step so that the hot path stays one screenful; it reads only
the per-slot arrays and the step log that ``SimCore`` keeps.
"""

from __future__ import annotations

import numpy as np

from andes.qoe import RequestOutcome, qoe_from_state

__all__ = ["Readouts"]


class Readouts:
    """``SimCore``'s results (mixed into it)."""

    def token_times(self, slot: int, ends: np.ndarray | None = None) -> np.ndarray:
        """Delivery times of ``slot``'s tokens, seconds after its arrival."""
        ends = np.asarray(self.step_ends) if ends is None else ends
        parts = [ends[s : s + c] for s, c in self.segments.get(int(slot), ())]
        t = np.concatenate(parts) if parts else np.zeros(0)
        return t - self.arrival[slot]

    def qoe_of(self, slots: np.ndarray) -> np.ndarray:
        """Final QoE from the incremental digest state (no token times needed)."""
        if self.has_segments:
            before = self.read_offset[slots]
            return np.asarray(qoe_from_state(self.num_generated[slots] - before, self.last_digest[slots],
                                             self.delay_area[slots], self.ttft[slots], self.tds[slots],
                                             base=(before, self.base_delay[slots], self.base_whole[slots])))
        return np.asarray(qoe_from_state(self.num_generated[slots], self.last_digest[slots],
                                         self.delay_area[slots], self.ttft[slots], self.tds[slots]))

    def outcomes(self, request_ids: list[str] | None = None) -> list[RequestOutcome]:
        """One ``RequestOutcome`` per slot, in slot order."""
        q = self.qoe_of(np.arange(self.num_slots))
        ends = np.asarray(self.step_ends)
        out = []
        for slot in range(self.num_slots):
            out.append(
                RequestOutcome(
                    request_id=request_ids[slot] if request_ids else str(slot),
                    ttft=float(self.ttft[slot]),
                    tds=float(self.tds[slot]),
                    token_times=self.token_times(slot, ends),
                    status=self.status.get(slot, "failed"),  # type: ignore[arg-type]
                    num_preemptions=int(self.num_preemptions[slot]),
                    arrival=float(self.arrival[slot]),
                    qoe=float(q[slot]),
                )
            )
        return out

"""The client half of Andes: a token pacer, a terminal chat and (in andes/serve/static) a page.

The server may pause a request that is ahead of its reader; the client holds tokens that arrive
early and releases each at its digest time (docs/design.md, Client buffer), so the pause is
invisible. ``ReleaseSchedule`` is that buffer (pure); ``PacedStream`` yields a streamed
completion's tokens at those times with its live QoE (``andes.qoe``, as the server scores it).
Adapters, imported on demand because they need optional packages: ``andes.client.sse``
(raw server-sent events over ``httpx``) and ``andes.client.openai_stream`` (``openai`` streams).
"""

from andes.client.events import StreamEvent, token_pieces
from andes.client.pacer import ClientSummary, ReleaseSchedule, Token
from andes.client.stream import PacedStream

__all__ = ["ClientSummary", "PacedStream", "ReleaseSchedule", "StreamEvent", "Token", "token_pieces"]

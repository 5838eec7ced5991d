"""A streamed response's body is closed however the response ends (``ClosingStreamingResponse``).

The body's cleanup aborts the engine request and frees the API key's stream slot, so it must not
wait for garbage collection. Starlette leaves a body cancelled while a chunk was being sent (the
client left then) suspended; here ``send`` blocks on the second chunk, as on a full socket, and
the response is ended by the client disconnecting (ASGI < 2.4: Starlette's own listener) and by
the server cancelling the handler (ASGI 2.4). The response is kept referenced, so nothing but
an explicit close can run the body's ``finally`` before the event loop ends.
"""

from __future__ import annotations

import asyncio

import pytest

from andes.serve.streaming import ClosingStreamingResponse


def scenario(spec_version: str, end: str) -> tuple[list[bool], object]:
    async def main():
        closed: list[bool] = []

        async def body():
            try:
                for i in range(1000):
                    yield f"data: {i}\n\n"
            finally:
                closed.append(True)

        response = ClosingStreamingResponse(body(), media_type="text/event-stream")
        blocked, messages = asyncio.Event(), []

        async def send(message):
            messages.append(message)
            if len(messages) == 3:  # start, first chunk, then the socket is full
                blocked.set()
                await asyncio.Event().wait()

        async def receive():
            await blocked.wait()
            if end == "disconnect":
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()

        task = asyncio.create_task(response({"type": "http", "asgi": {"spec_version": spec_version}},
                                            receive, send))
        await blocked.wait()
        if end == "cancel":
            task.cancel()
        try:
            await asyncio.wait_for(task, 10)
        except asyncio.CancelledError:
            pass
        # Read now: asyncio.run closes every generator left open when it ends.
        return list(closed), response

    return asyncio.run(main())


@pytest.mark.parametrize("spec_version, end", [("2.0", "disconnect"), ("2.0", "cancel"), ("2.4", "cancel")])
def test_the_body_is_closed_when_the_response_ends_mid_chunk(spec_version, end):
    closed, response = scenario(spec_version, end)
    assert closed == [True]
    assert response is not None  # kept alive until here: no garbage collection closed the body

"""``andes chat``: a terminal chat that prints each answer at its reader's pace, then its figures.

The server sends tokens as fast as it makes them (often ten times a reader's pace) and may pause
a request that is ahead of its reader; this chat prints each token at its digest time
(``andes.client.PacedStream``), so what you see is what a reader at ``--speed`` would read, and
after each answer it prints the TTFT, the pace tokens arrived at, the pace they were shown at and
the QoE (``andes.qoe``), beside the gateway's own QoE figure.

``add_chat_parser`` registers the subcommand on the ``andes`` command tree (handler
``run_chat``); ``main(argv)`` runs it standalone (``python -m andes.client.chat``). The HTTP
client is imported only when a chat starts, so building the command tree needs only the core.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from typing import Any, Iterable, Sequence, TextIO

from andes.client.stream import PacedStream
from andes.expectations import DEFAULT_SERVICE_CLASSES, validate_expectations

__all__ = ["add_chat_parser", "figures_line", "main", "run_chat"]


def speed(value: str) -> tuple[str, float]:
    """``--speed``: a service class (``text``, ``voice``) or tokens/s; ``(class, tds)``."""
    if value in DEFAULT_SERVICE_CLASSES:
        return value, DEFAULT_SERVICE_CLASSES[value].tds
    try:
        tds = float(value)
        validate_expectations(1.0, tds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected {' or '.join(DEFAULT_SERVICE_CLASSES)} or tokens/s ({exc})") from None
    return "text", tds


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the gateway (default http://127.0.0.1:8000)")
    parser.add_argument("--speed", type=speed, default=("text", DEFAULT_SERVICE_CLASSES["text"].tds),
                        help="reading speed: text (4.8 tokens/s), voice (3.3) or tokens/s (default text)")
    parser.add_argument("--ttft", type=float, default=None,
                        help="expected seconds to the first token (default: the class's rule)")
    parser.add_argument("--max-tokens", type=int, default=128, help="answer length cap (default 128)")
    parser.add_argument("--model", default=None, help="model name (default: the server's)")
    parser.add_argument("-p", "--prompt", action="append", default=None,
                        help="ask this and exit (repeatable; default: read questions from stdin)")


def add_chat_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``andes chat`` on the main CLI's subparsers; its handler is ``run_chat``."""
    parser = subparsers.add_parser(
        "chat", help="chat with a server, answers shown at a reader's pace with their QoE",
        description="Chat with an Andes gateway. Each answer is printed at the reading speed, "
                    "as a paced client shows it, then its TTFT, delivered TDS and QoE.")
    _add_arguments(parser)
    parser.set_defaults(func=run_chat)
    return parser


def figures_line(stream: PacedStream) -> str:
    """One line of what the reader got: client TTFT, paces, QoE and the gateway's QoE."""
    s = stream.summary()
    if s.num_tokens == 0 and stream.error is not None:
        return f"[error: {stream.error}]"
    parts = [f"TTFT {_num(s.ttft, 2)} s", f"received {_num(s.received_tds, 1)} tok/s",
             f"shown {_num(s.displayed_tds, 1)} tok/s", f"QoE {s.qoe:.3f}"]
    if stream.report is not None and stream.report.get("qoe") is not None:
        parts[-1] += f" (gateway {float(stream.report['qoe']):.3f})"
    line = "[" + " | ".join(parts) + "]"
    return line if stream.error is None else f"{line}\n[error: {stream.error}]"


def _num(x: float, digits: int) -> str:
    return "-" if not math.isfinite(x) else f"{x:.{digits}f}"


async def _ask(client: Any, args: argparse.Namespace, messages: list[dict[str, str]], out: TextIO
               ) -> tuple[str, PacedStream]:
    from andes.client.sse import paced_chat

    service_class, tds = args.speed
    stream = paced_chat(client, args.url, messages, tds=tds, ttft=args.ttft, service_class=service_class,
                        max_tokens=args.max_tokens, model=args.model)
    parts = []
    async with stream:
        async for token in stream:
            parts.append(token.text)
            out.write(token.text)
            out.flush()
    out.write("\n" + figures_line(stream) + "\n")
    out.flush()
    return "".join(parts), stream


async def chat(args: argparse.Namespace, questions: Iterable[str] | None, out: TextIO) -> int:
    """Ask ``questions`` (None: read them from stdin) in one conversation; 1 if any failed."""
    import httpx

    messages: list[dict[str, str]] = []
    failed = False
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        for question in questions if questions is not None else _stdin_questions():
            messages.append({"role": "user", "content": question})
            answer, stream = await _ask(client, args, messages, out)
            failed |= stream.error is not None
            messages.append({"role": "assistant", "content": answer})
    return 1 if failed else 0


def _stdin_questions() -> Iterable[str]:
    while True:
        try:
            line = input("> ")
        except EOFError:
            return
        if line.strip():
            yield line


def run_chat(args: argparse.Namespace) -> int:
    """The ``andes chat`` handler."""
    return asyncio.run(chat(args, args.prompt, sys.stdout))


def main(argv: Sequence[str] | None = None) -> int:
    """``andes chat`` on its own."""
    parser = argparse.ArgumentParser(prog="andes chat", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    return run_chat(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

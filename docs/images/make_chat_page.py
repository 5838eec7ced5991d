"""Regenerate docs/images/chat-page.png: the chat page mid-answer while Andes pauses the answer.

One engine with a small KV cache (the default profile with 60 blocks and 8 seats) serves ten
background readers and the page's question, so the policy pauses requests that are ahead of
their readers. The screenshot, taken 14 s into the answer, shows the received curve stopping
and starting while the shown curve climbs at the reading pace, with QoE 1.

Needs the dev extra, playwright and Debian's chromium (see tests/client/test_page.py):
    PYTHONPATH=. .venv/bin/python docs/images/make_chat_page.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from playwright.sync_api import sync_playwright

from andes.loadgen.serve_proc import free_port
from andes.serve.local import make_local_app

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-gpu", "--headless"]
QUESTION = "Why does my answer appear at reading speed, and what is a QoE of 1?"


def small_kv_profile(directory: Path) -> Path:
    profile = json.loads((ROOT / "andes/profiles/llama2-13b-a100.json").read_text())
    profile.update(name="small-kv", num_gpu_blocks=60, num_cpu_blocks=64, max_num_seqs=8)
    path = directory / "small-kv.json"
    path.write_text(json.dumps(profile))
    return path


def background_readers(base: str, num: int) -> None:
    async def one() -> None:
        body = {"prompt": "background " * 20, "max_tokens": 400, "stream": True, "ttft": 1.0, "tds": 4.8}
        async with httpx.AsyncClient(timeout=None) as client:
            async with client.stream("POST", f"{base}/v1/completions", json=body) as response:
                async for _ in response.aiter_lines():
                    pass

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(num)))
    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()


def screenshot(base: str, out: Path, at_s: float) -> dict:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{base}/")
        page.fill("#prompt", QUESTION)
        page.click("#send")
        page.wait_for_function(f"() => {{ const s = window.andesChat.snapshot(); return s && s.now >= {at_s}; }}",
                               timeout=120_000)
        page.screenshot(path=str(out))
        snapshot = page.evaluate("window.andesChat.snapshot()")
        browser.close()
    return snapshot


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_local_app({"replica": {"engine": {"profile": str(small_kv_profile(Path(tmp)))},
                                          "policy": {"name": "andes"}}})
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        while not server.started:
            time.sleep(0.1)
        background_readers(base, 10)
        time.sleep(4.0)  # let the background readers fill the cache first
        snapshot = screenshot(base, out, at_s=14.0)
        server.should_exit = True
        thread.join(timeout=10)
    print(f"{out}: {len(snapshot['arrivals'])} tokens received, {snapshot['numShown']} shown, "
          f"live QoE {snapshot['qoeText']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/images/chat-page.png")

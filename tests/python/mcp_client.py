"""A third-party MCP client for the tests: the official Python SDK (PyPI `mcp`) against Wharf's
/mcp. Lists the tools, calls one with progress, makes a call that fails the tool's schema, and
gives up on a long call after a few seconds (which cancels it). Prints what it saw as one JSON
line, then stays connected until its stdin closes; the Rust test (tests/it/mcp_endpoint.rs)
checks the line and the platform's side.

Usage: WHARF_KEY=... mcp_client.py URL MODE
    (MODE: "auto" for MCP 2026-07-28, "legacy" for initialize; the key is sent as a bearer token)
"""

import json
import os
import sys

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, mode: str) -> None:
    seen: dict = {}
    headers = {"Authorization": f"Bearer {os.environ['WHARF_KEY']}"}
    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    async with Client(transport, mode=mode) as client:
        seen["protocol"] = client.protocol_version
        tools = await client.list_tools()
        seen["tools"] = sorted(t.name for t in tools.tools)

        progress = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append({"progress": done, "total": total, "message": message})

        slept = await client.call_tool(
            "demo.sleep", {"seconds": 1, "steps": 4}, progress_callback=on_progress
        )
        seen["sleep"] = {
            "text": slept.content[0].text,
            "is_error": bool(slept.is_error),
            "task_id": (slept.meta or {}).get("wharf/taskId"),
        }
        seen["progress"] = progress

        bad = await client.call_tool("demo.sleep", {"seconds": "soon"})
        seen["bad"] = {
            "is_error": bool(bad.is_error),
            "text": bad.content[0].text,
            "problem": bad.structured_content,
        }

        # Give up on a long call: the SDK cancels it (closing its stream on 2026-07-28,
        # sending notifications/cancelled before).
        with anyio.move_on_after(3) as scope:
            await client.call_tool("demo.sleep", {"seconds": 60})
        seen["gave_up"] = scope.cancelled_caught
        print(json.dumps(seen), flush=True)
        # Stay connected until the test has seen the cancellation through (it closes stdin):
        # a client that exits at once may drop its courtesy notifications/cancelled unsent.
        await anyio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])

"""Submit a task to Wharf over NATS and follow its events to the result, with nats-py.

    pip install nats-py
    python examples/nats_submit.py demo.sleep '{"seconds": 2, "steps": 4}'

Options: --nats URL (default $NATS_URL, else nats://127.0.0.1:4222; `wharf dev` prints the URL
of the server it started), --tenant
(default `default`), --token (a Wharf API key: the gateway's auth callout lets the connection act
for that key's tenant; the platform's own NATS user needs none).

It prints one JSON line per live event, then the task as `get` reads it. The exit status is 0
when the task succeeded, 1 when it failed or was cancelled, 2 when Wharf refused it.
"""

import argparse
import asyncio
import json
import os
import sys
import uuid

import nats

TERMINAL = {"succeeded", "failed", "cancelled"}


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tool")
    parser.add_argument("arguments", nargs="?", default="{}")
    parser.add_argument("--nats", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()

    # A tenant's connection may read replies below its tenant's inbox prefix only.
    nc = await nats.connect(
        args.nats, token=args.token, inbox_prefix=f"_INBOX_{args.tenant}".encode()
    )
    api = f"wharf.api.{args.tenant}.tasks"
    # Follow before submitting, so no event of the new task can be missed.
    events = await nc.subscribe(f"wharf.live.events.{args.tenant}.>")

    request = {"tool": args.tool, "arguments": json.loads(args.arguments)}
    # Sent again after a lost reply, the same key gives the same task, never a second one.
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    reply = await nc.request(f"{api}.submit", json.dumps(request).encode(), timeout=10, headers=headers)
    if refused(reply):
        await nc.close()
        return 2
    task = json.loads(reply.data)
    print(json.dumps({"submitted": task["id"], "status": reply.headers.get("Wharf-Status")}), flush=True)

    async for message in events.messages:
        event = json.loads(message.data)
        if event["task_id"] != task["id"]:
            continue
        print(json.dumps(event), flush=True)
        if event["type"] in TERMINAL:
            break

    reply = await nc.request(f"{api}.get", json.dumps({"id": task["id"]}).encode(), timeout=10)
    await nc.close()
    if refused(reply):
        return 2
    final = json.loads(reply.data)
    print(json.dumps({"task": final}), flush=True)
    return 0 if final["status"] == "succeeded" else 1


def refused(reply) -> bool:
    """Prints Wharf's problem document when the reply is a refusal."""
    code = (reply.headers or {}).get("Nats-Service-Error-Code")
    if code is None:
        return False
    print(json.dumps({"refused": int(code), "problem": json.loads(reply.data)}), flush=True)
    return True


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

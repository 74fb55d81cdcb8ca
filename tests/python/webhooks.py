"""Standard Webhooks done by the reference Python library (PyPI `standardwebhooks`), for the
tests to check Wharf against an implementation it did not write.

    webhooks.py sign SECRET MESSAGE_ID TIMESTAMP < body     prints the webhook-signature value
    webhooks.py verify SECRET < request.json                exits 0 when the request verifies

`request.json` is {"headers": {...}, "body": "<the body as text>"}.
"""

import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    command, secret = sys.argv[1], sys.argv[2]
    hook = Webhook(secret)
    if command == "sign":
        message_id, timestamp = sys.argv[3], int(sys.argv[4])
        body = sys.stdin.buffer.read()
        at = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        print(hook.sign(message_id, at, body))
        return 0
    if command == "verify":
        request = json.load(sys.stdin)
        try:
            hook.verify(request["body"].encode(), request["headers"], json_parse=False)
        except WebhookVerificationError as e:
            print(f"refused: {e}")
            return 1
        print("verified")
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

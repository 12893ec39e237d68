"""Verifies one webhook delivery with the official Standard Webhooks library.

Usage: verify_webhook.py SECRET < {"headers": {...}, "body": "<base64>"}
Exit 0: verified; 10: not verified (the reason on stderr).
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    secret = sys.argv[1]
    delivery = json.load(sys.stdin)
    body = base64.b64decode(delivery["body"])
    try:
        Webhook(secret).verify(body, delivery["headers"])
    except WebhookVerificationError as error:
        print(f"not verified: {error}", file=sys.stderr)
        return 10
    print("verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HTTP messages built by the official CloudEvents Python SDK, printed as JSON for the
gateway's tests to send: one line holding a list of {name, headers, body}.

Events carry (source, id) pairs where two sources reuse the same id, to prove that the
gateway keys de-duplication on both. The SDK has no batch writer, so the batch is the JSON
array of events the SDK's JSON format writes (the JSON batch format is exactly that).
"""
import json
import sys

from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent


def event(source: str, event_id: str, amount: int) -> CloudEvent:
    return CloudEvent(
        attributes={
            "type": "ledger.post",
            "source": source,
            "id": event_id,
            "datacontenttype": "application/json",
        },
        data={"account": "ce-sdk", "amount_cents": amount, "currency": "EUR"},
    )


def message(name: str, msg: http.HTTPMessage) -> dict:
    return {"name": name, "headers": dict(msg.headers), "body": msg.body.decode("utf-8")}


def main() -> None:
    fmt = JSONFormat()
    billing = event("/billing", "1", 100)
    shipping = event("/shipping", "1", 200)
    returns = event("/returns", "1", 300)
    batch = b"[" + b",".join(fmt.write(e) for e in (billing, shipping, returns)) + b"]"
    messages = [
        message("structured billing/1", http.to_structured_event(billing)),
        message("structured shipping/1", http.to_structured_event(shipping)),
        message("binary billing/1", http.to_binary_event(billing)),
        {
            "name": "batch billing/1 shipping/1 returns/1",
            "headers": {"content-type": "application/cloudevents-batch+json"},
            "body": batch.decode("utf-8"),
        },
    ]
    json.dump(messages, sys.stdout)


if __name__ == "__main__":
    main()

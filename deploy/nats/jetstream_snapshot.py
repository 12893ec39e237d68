#!/usr/bin/env python3
"""Back up and restore JetStream streams through the server's own snapshot API, the one
`nats stream backup/restore` uses ($JS.API.STREAM.SNAPSHOT.<stream>,
$JS.API.STREAM.RESTORE.<stream>): configuration, messages and durable consumers with
their state.

A backup of stream S is a directory S/ holding backup.json (the stream's configuration and
state as the server reported them) and stream.tar.s2 (the snapshot, as the server sent it).

  jetstream_snapshot.py backup  --server URL --out DIR [--gcs-bucket B] STREAM...
  jetstream_snapshot.py restore --server URL --in DIR STREAM...

With --gcs-bucket the backup is then uploaded to gs://B/<UTC time>/<stream>/ with the
workload's own identity (GKE Workload Identity, through the metadata server): standard
library only, no gcloud in the image. The bucket's IAM lets the CronJob create objects,
never read, overwrite or delete them.

Credentials: NATS_USER/NATS_PASSWORD or NATS_CREDS; NATS_TLS_CA for a private CA.
Used by the JetStream backup CronJob (gitops/platform, docs/DR.md) and tested against a
real nats-server by scripts/deploy/check_deploy.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import nats

CHUNK = 128 * 1024
TIMEOUT = 30.0


class SnapshotError(Exception):
    """The server refused or broke off a snapshot or restore; the message says why."""


ASYNC_ERRORS: list[str] = []


async def _on_error(exc: Exception) -> None:
    # permission violations arrive asynchronously; a snapshot whose acks were refused
    # stalls or is cut short, so any of them fails the run
    ASYNC_ERRORS.append(str(exc))


async def connect(server: str):
    opts: dict = {"servers": [server], "connect_timeout": 10, "max_reconnect_attempts": 3, "error_cb": _on_error}
    if os.environ.get("NATS_CREDS"):
        opts["user_credentials"] = os.environ["NATS_CREDS"]
    elif os.environ.get("NATS_USER"):
        opts["user"] = os.environ["NATS_USER"]
        opts["password"] = os.environ.get("NATS_PASSWORD", "")
    if os.environ.get("NATS_TLS_CA"):
        opts["tls"] = ssl.create_default_context(cafile=os.environ["NATS_TLS_CA"])
    return await nats.connect(**opts)


def api_error(reply: dict, what: str) -> None:
    if "error" in reply:
        err = reply["error"]
        raise SnapshotError(f"{what}: {err.get('description', err)} (code {err.get('err_code', err.get('code'))})")


async def backup(nc, stream: str, out: Path) -> dict:
    """Snapshot one stream into out/<stream>/; returns the stream state the server reported."""
    target = out / stream
    target.mkdir(parents=True, exist_ok=True)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    request = {"deliver_subject": inbox, "chunk_size": CHUNK, "no_consumers": False}
    reply = json.loads((await nc.request(f"$JS.API.STREAM.SNAPSHOT.{stream}", json.dumps(request).encode(), timeout=TIMEOUT)).data)
    api_error(reply, f"snapshot of {stream}")
    size = 0
    with (target / "stream.tar.s2").open("wb") as data:
        while True:
            msg = await sub.next_msg(timeout=TIMEOUT)
            if not msg.data:
                # end of snapshot; a status header here means the server gave up
                status = (msg.headers or {}).get("Status") or (msg.headers or {}).get("Nats-Status")
                description = (msg.headers or {}).get("Description", "")
                if status and not str(status).startswith("2") and description:
                    raise SnapshotError(f"snapshot of {stream} broke off: {status} {description}")
                break
            data.write(msg.data)
            size += len(msg.data)
            if msg.reply:
                await msg.respond(b"")  # flow control: the server waits for these acks
    await sub.unsubscribe()
    if ASYNC_ERRORS:
        raise SnapshotError(f"snapshot of {stream}: the server refused: {ASYNC_ERRORS[0]}")
    meta = {"config": reply["config"], "state": reply["state"]}
    (target / "backup.json").write_text(json.dumps(meta, indent=2))
    print(f"backed up {stream}: {reply['state'].get('messages', 0)} messages, {size} bytes", file=sys.stderr)
    return reply["state"]


async def restore(nc, stream: str, source: Path) -> dict:
    """Restore one stream from source/<stream>/ into a server that does not have it."""
    meta = json.loads((source / stream / "backup.json").read_text())
    reply = json.loads((await nc.request(f"$JS.API.STREAM.RESTORE.{stream}", json.dumps(meta).encode(), timeout=TIMEOUT)).data)
    api_error(reply, f"restore of {stream}")
    deliver = reply["deliver_subject"]
    with (source / stream / "stream.tar.s2").open("rb") as data:
        while chunk := data.read(CHUNK):
            ack = await nc.request(deliver, chunk, timeout=TIMEOUT)
            if ack.data:
                api_error(json.loads(ack.data), f"restore of {stream}")
    done = json.loads((await nc.request(deliver, b"", timeout=TIMEOUT * 4)).data)
    api_error(done, f"restore of {stream}")
    if ASYNC_ERRORS:
        raise SnapshotError(f"restore of {stream}: the server refused: {ASYNC_ERRORS[0]}")
    print(f"restored {stream}: {done.get('state', {}).get('messages', 0)} messages", file=sys.stderr)
    return done.get("state", {})


METADATA_TOKEN = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"


def upload(bucket: str, out: Path, streams: list[str]) -> None:
    """Copy out/<stream>/* to gs://bucket/<UTC time>/<stream>/ (create-only objects)."""
    req = urllib.request.Request(METADATA_TOKEN, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        token = json.load(resp)["access_token"]
    prefix = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    for stream in streams:
        for path in sorted((out / stream).iterdir()):
            name = urllib.parse.quote(f"{prefix}/{stream}/{path.name}", safe="")
            url = (f"https://storage.googleapis.com/upload/storage/v1/b/{bucket}/o"
                   f"?uploadType=media&name={name}&ifGenerationMatch=0")
            body = path.read_bytes()
            put = urllib.request.Request(url, data=body, method="POST", headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(put, timeout=300) as resp:
                resp.read()
            print(f"uploaded gs://{bucket}/{prefix}/{stream}/{path.name} ({len(body)} bytes)", file=sys.stderr)


async def main_async(args) -> int:
    nc = await connect(args.server)
    try:
        for stream in args.streams:
            if args.command == "backup":
                await backup(nc, stream, Path(args.out))
            else:
                await restore(nc, stream, Path(getattr(args, "in")))
    except (SnapshotError, nats.errors.Error, TimeoutError, OSError) as exc:
        print(f"error: {exc}; check the server URL, the user's permissions on $JS.API.STREAM.SNAPSHOT/RESTORE and the stream name", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    if args.command == "backup" and args.gcs_bucket:
        try:
            upload(args.gcs_bucket, Path(args.out), args.streams)
        except OSError as exc:  # urllib's HTTP and URL errors are OSErrors
            print(f"error: upload to gs://{args.gcs_bucket} failed: {exc}; check the CronJob's Workload Identity "
                  "binding (terraform modules/backup_bucket) and egress to the metadata server", file=sys.stderr)
            return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup")
    b.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    b.add_argument("--out", required=True)
    b.add_argument("--gcs-bucket", default=os.environ.get("BACKUP_BUCKET", ""))
    b.add_argument("streams", nargs="+")
    r = sub.add_parser("restore")
    r.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    r.add_argument("--in", required=True)
    r.add_argument("streams", nargs="+")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

"""Backups that restore: with the tool the backup CronJob runs (deploy/nats/jetstream_snapshot.py),
as the NATS user it runs as (codigo-ctl, deploy/nats/permissions.conf), back up a CODIGO_JOBS
work queue holding jobs (and a durable consumer) from one private nats-server, restore it
into a second, empty one, and prove every job is there, byte for byte with its headers,
and the consumer too."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "nats"))
import jetstream_snapshot  # noqa: E402

JOBS = 250
PERMISSIONS = ROOT / "deploy" / "nats" / "permissions.conf"
USER, PASSWORD_ENV = "codigo-ctl", "CODIGO_CTL_NATS_PASSWORD"
PASSWORDS = {"CODIGO_PRODUCER_NATS_PASSWORD": "test-producer", "CODIGO_CONSUMER_NATS_PASSWORD": "test-consumer",
             "CODIGO_CTL_NATS_PASSWORD": "test-ctl"}
STREAM = "CODIGO_JOBS"
DURABLE = "codigo-ledger-post"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: str, workdir: Path, name: str) -> None:
        self.port = free_port()
        store = workdir / name
        store.mkdir()
        shutil.copy(PERMISSIONS, store / "permissions.conf")
        conf = store / "server.conf"
        conf.write_text(f'listen: "127.0.0.1:{self.port}"\nserver_name: {name}\n'
                        f'jetstream {{ store_dir: "{store / "js"}" }}\ninclude ./permissions.conf\n')
        self.log = store / "server.log"
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf), "-l", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, **PASSWORDS),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server {name} exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"nats-server {name} did not listen within 60 s")
        self.url = f"nats://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def seed(url: str) -> dict[str, bytes]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

    nc = await nats.connect(url, user=USER, password=PASSWORDS[PASSWORD_ENV])
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["codigo.jobs.>"], retention=RetentionPolicy.WORK_QUEUE,
                                     storage=StorageType.FILE, duplicate_window=120))
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT,
                                                  filter_subject="codigo.jobs.ledger.post", max_deliver=5))
    jobs = {}
    for i in range(JOBS):
        job_id = f"job-{i:05d}"
        # ~2 KiB each: the snapshot spans several chunks, so flow control is exercised
        body = json.dumps({"id": job_id, "tenant": "t1", "payload": {"amount": i, "memo": os.urandom(1024).hex()}}).encode()
        subject = "codigo.jobs.ledger.post" if i % 2 else "codigo.jobs.webhook.deliver"
        await js.publish(subject, body, headers={"Nats-Msg-Id": job_id})
        jobs[job_id] = body
    await nc.close()
    return jobs


async def read_all(url: str) -> tuple[dict[str, bytes], list[str]]:
    import nats

    nc = await nats.connect(url, user=USER, password=PASSWORDS[PASSWORD_ENV])
    js = nc.jetstream()
    info = await js.stream_info(STREAM)
    found = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM, seq)
        found[(msg.headers or {}).get("Nats-Msg-Id", f"seq-{seq}")] = msg.data
    consumers = [c.name for c in await js.consumers_info(STREAM)]
    await nc.close()
    return found, consumers


def tool(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NATS_USER=USER, NATS_PASSWORD=PASSWORDS[PASSWORD_ENV])
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "nats" / "jetstream_snapshot.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def run(nats_server: str) -> str:
    work = Path(tempfile.mkdtemp(prefix="codigo-js-restore-"))
    servers = []
    try:
        source = Server(nats_server, work, "source")
        servers.append(source)
        jobs = asyncio.run(seed(source.url))
        backup_dir = work / "backup"
        rc = tool("backup", "--server", source.url, "--out", str(backup_dir), STREAM)
        if rc.returncode != 0:
            raise AssertionError(f"backup failed: {rc.stderr}")
        for name in ("backup.json", "stream.tar.s2"):
            if not (backup_dir / STREAM / name).is_file():
                raise AssertionError(f"backup wrote no {name}")
        source.stop()
        servers.remove(source)

        target = Server(nats_server, work, "target")
        servers.append(target)
        rc = tool("restore", "--server", target.url, "--in", str(backup_dir), STREAM)
        if rc.returncode != 0:
            raise AssertionError(f"restore failed: {rc.stderr}")
        found, consumers = asyncio.run(read_all(target.url))
        missing = sorted(set(jobs) - set(found))
        changed = sorted(k for k in jobs if k in found and found[k] != jobs[k])
        if missing or changed or len(found) != len(jobs):
            raise AssertionError(f"after restore: {len(found)} of {len(jobs)} jobs; missing {missing[:5]}, changed {changed[:5]}")
        if DURABLE not in consumers:
            raise AssertionError(f"durable {DURABLE} not restored (consumers: {consumers})")
        return f"{len(jobs)} jobs and durable {DURABLE} restored into an empty server"
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(run(sys.argv[1]))

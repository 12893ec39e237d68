"""NATS checks of scripts/check-helm.sh.

- parse deploy/nats/permissions.conf (the nats-server config subset it uses) and compare
  its users with the NATS app values in gitops/values/nats.yaml;
- render the NATS server config each environment gets (authorization + JetStream with its
  sync_interval) and have `nats-server -t` accept it;
- start a private nats-server with permissions.conf and drive the real client flows of
  every user, asserting both what must work and what must be refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD_ENV = {
    "codigo-producer": "CODIGO_PRODUCER_NATS_PASSWORD",
    "codigo-consumer": "CODIGO_CONSUMER_NATS_PASSWORD",
    "codigo-ctl": "CODIGO_CTL_NATS_PASSWORD",
}
TEST_PASSWORDS = {env: f"test-{user}" for user, env in PASSWORD_ENV.items()}


# --- a small parser for the nats-server config format ---------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>(?:\#|//)[^\n]*)
      | (?P<punct>[{}\[\],])
      | (?P<sep>=|:)
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | '(?P<sq>[^']*)'
      | (?P<bare>[^\s{}\[\],:=#"']+)
    )""",
    re.VERBOSE,
)


class _Var(str):
    """An unquoted $NAME: a variable (environment) reference."""


def _tokens(text: str):
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                return
            raise ValueError(f"cannot parse config near: {text[pos:pos + 40]!r}")
        pos = m.end()
        if m.group("comment") is not None:
            continue
        if m.group("punct"):
            yield ("p", m.group("punct"))
        elif m.group("sep"):
            yield ("sep", m.group("sep"))
        elif m.group("dq") is not None:
            yield ("s", m.group("dq"))
        elif m.group("sq") is not None:
            yield ("s", m.group("sq"))
        else:
            bare = m.group("bare")
            yield ("s", _Var(bare[1:]) if bare.startswith("$") else bare)


def parse_conf(text: str) -> dict:
    toks = list(_tokens(text))
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def take():
        nonlocal pos
        tok = toks[pos]
        pos += 1
        return tok

    def value():
        kind, val = take()
        if (kind, val) == ("p", "{"):
            return mapping("}")
        if (kind, val) == ("p", "["):
            items = []
            while peek() != ("p", "]"):
                if peek() == ("p", ","):
                    take()
                    continue
                items.append(value())
            take()
            return items
        if kind != "s":
            raise ValueError(f"unexpected {val!r}")
        return val

    def mapping(end):
        out = {}
        while True:
            kind, val = peek()
            if kind is None and end is None:
                return out
            if (kind, val) == ("p", end):
                take()
                return out
            if (kind, val) == ("p", ","):
                take()
                continue
            kind, key = take()
            if kind != "s":
                raise ValueError(f"expected a key, got {key!r}")
            if peek()[0] == "sep":
                take()
            out[str(key)] = value()

    return mapping(None)


def _normalise_users(users: list) -> dict:
    out = {}
    for u in users:
        perms = u.get("permissions", {})
        norm = {}
        for direction in ("publish", "subscribe"):
            d = perms.get(direction, {})
            if isinstance(d, list):
                d = {"allow": d}
            norm[direction] = {k: sorted(str(s) for s in d.get(k, [])) for k in ("allow", "deny") if d.get(k)}
        password = u.get("password")
        out[str(u["user"])] = {"password": password, "permissions": norm}
    return out


def users_from_conf(path: Path) -> dict:
    conf = parse_conf(path.read_text())
    users = _normalise_users(conf["authorization"]["users"])
    for name, u in users.items():
        pw = u["password"]
        if not isinstance(pw, _Var):
            raise AssertionError(f"{path}: {name}: password must be an environment reference, not a literal")
        u["password"] = f"env:{pw}"
    return users


def users_from_values(values: dict) -> dict:
    users = _normalise_users(values["config"]["merge"]["authorization"]["users"])
    for name, u in users.items():
        m = re.fullmatch(r"<<\s*\$(\w+)\s*>>", str(u["password"]))
        if not m:
            raise AssertionError(f"NATS values: {name}: password must be << $ENV_VAR >>")
        u["password"] = f"env:{m.group(1)}"
    return users


def check_equivalent(conf_path: Path, values: dict) -> None:
    a, b = users_from_conf(conf_path), users_from_values(values)
    if a != b:
        diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        raise AssertionError("permissions.conf and the NATS app values differ:\n" + json.dumps(diff, indent=2))
    if set(a) != set(PASSWORD_ENV):
        raise AssertionError(f"expected users {sorted(PASSWORD_ENV)}, got {sorted(a)}")
    for user, env in PASSWORD_ENV.items():
        if a[user]["password"] != f"env:{env}":
            raise AssertionError(f"{user}: password must come from ${env}")
    for env_var in PASSWORD_ENV.values():
        envs = values.get("container", {}).get("env", {})
        if env_var not in envs:
            raise AssertionError(f"NATS values: container.env lacks {env_var}")


# --- the server config the NATS chart renders ------------------------------------------

def _chart_json(obj) -> str:
    """JSON as the NATS chart writes it: "<< X >>" strings become raw X."""
    text = json.dumps(obj, indent=2)
    return re.sub(r'"<<\s*(.*?)\s*>>"', r"\1", text)


def render_server_conf(values: dict, store_dir: str) -> str:
    """The parts of nats.conf the chart builds from our values (no TLS, no cluster:
    those need certificates and peers; the chart itself builds them)."""
    cfg = values["config"]
    js = {"store_dir": store_dir}
    js.update(cfg["jetstream"].get("merge", {}))
    conf = {"port": 4222, "http_port": 8222, "jetstream": js}
    conf.update(cfg.get("merge", {}))
    return _chart_json(conf)


def nats_server_test(nats_server: str, conf_text: str, workdir: Path, name: str) -> None:
    path = workdir / name
    path.write_text(conf_text)
    env = dict(os.environ, **TEST_PASSWORDS)
    proc = subprocess.run([nats_server, "-t", "-c", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"nats-server -t rejected {name}: {proc.stdout}{proc.stderr}")


# --- live permission test ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _flows(port: int) -> list[str]:
    import nats
    from nats.js.api import (AckPolicy, ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType,
                             StreamConfig, StreamSource, SubjectTransform)

    failures: list[str] = []
    url = f"nats://127.0.0.1:{port}"

    async def connect(user: str):
        violations: list[str] = []

        async def on_error(e):
            violations.append(str(e))

        nc = await nats.connect(url, user=user, password=TEST_PASSWORDS[PASSWORD_ENV[user]],
                                error_cb=on_error, allow_reconnect=False, connect_timeout=2)
        return nc, nc.jetstream(timeout=1.0), violations

    async def must(what: str, coro):
        try:
            return await coro
        except Exception as e:  # noqa: BLE001 - report any failure
            failures.append(f"{what} should work, failed: {type(e).__name__}: {e}")

    async def refused(what: str, coro):
        try:
            await coro
        except Exception:  # noqa: BLE001 - a refusal surfaces as timeout or API error
            return
        failures.append(f"{what} should be refused but worked")

    # ctl: set up the streams and durables like `codigo-ctl setup`.
    ctl, cjs, _ = await connect("codigo-ctl")
    await must("ctl creates CODIGO_SCHEDULED", cjs.add_stream(StreamConfig(
        name="CODIGO_SCHEDULED", subjects=["codigo.scheduled.>", "codigo.due.>"],
        discard=DiscardPolicy.OLD, storage=StorageType.FILE, duplicate_window=120,
        allow_msg_schedules=True, allow_msg_ttl=True)))
    await must("ctl creates CODIGO_JOBS", cjs.add_stream(StreamConfig(
        name="CODIGO_JOBS", subjects=["codigo.jobs.>"], retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, duplicate_window=120,
        sources=[StreamSource(name="CODIGO_SCHEDULED", subject_transforms=[
            SubjectTransform(src="codigo.due.>", dest="codigo.jobs.>")])])))
    await must("ctl creates CODIGO_DLQ", cjs.add_stream(StreamConfig(
        name="CODIGO_DLQ", subjects=["codigo.dlq.>"], storage=StorageType.FILE)))
    await must("ctl creates CODIGO_ADVISORIES", cjs.add_stream(StreamConfig(
        name="CODIGO_ADVISORIES",
        subjects=["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CODIGO_JOBS.>"], storage=StorageType.FILE)))
    for jt in ("ledger.post", "webhook.deliver"):
        durable = "codigo-" + jt.replace(".", "-")
        await must(f"ctl creates consumer {durable}", cjs.add_consumer("CODIGO_JOBS", ConsumerConfig(
            durable_name=durable, filter_subject=f"codigo.jobs.{jt}", ack_policy=AckPolicy.EXPLICIT,
            max_deliver=5)))
    await must("ctl reads stream info", cjs.stream_info("CODIGO_JOBS"))
    await refused("ctl creates a stream outside CODIGO_*", cjs.add_stream(StreamConfig(name="OTHER", subjects=["other.>"])))

    # producer: publish with dedup, read stream info, delete a cancelled job; no purge.
    prod, pjs, pviol = await connect("codigo-producer")
    await must("producer publishes a job", pjs.publish(
        "codigo.jobs.ledger.post", b'{"type":"ledger.post"}', headers={"Nats-Msg-Id": "job-1"}))
    await must("producer publishes a webhook job", pjs.publish(
        "codigo.jobs.webhook.deliver", b'{"type":"webhook.deliver"}', headers={"Nats-Msg-Id": "job-2"}))
    cancelled = await must("producer publishes a job to cancel", pjs.publish(
        "codigo.jobs.ledger.post", b'{"type":"ledger.post"}', headers={"Nats-Msg-Id": "job-cancel-1"}))
    if cancelled is not None:
        await must("producer removes a cancelled job", pjs.delete_msg("CODIGO_JOBS", cancelled.seq))
    await must("producer reads CODIGO_JOBS info", pjs.stream_info("CODIGO_JOBS"))
    delayed = "codigo.scheduled.0190f3a2-0000-7000-8000-000000000001.ledger.post"
    await must("producer schedules a delayed job", pjs.publish(
        delayed, b'{"type":"ledger.post"}', headers={
            "Nats-Msg-Id": "job-4", "Nats-Schedule": "@at 2099-01-01T00:00:00Z",
            "Nats-Schedule-Target": "codigo.due.ledger.post", "Nats-Schedule-TTL": "168h"}))
    waiting = await must("producer reads a delayed job back", pjs.get_last_msg(
        "CODIGO_SCHEDULED", "codigo.scheduled.0190f3a2-0000-7000-8000-000000000001.>"))
    if waiting is not None:
        await must("producer cancels a delayed job", pjs.delete_msg("CODIGO_SCHEDULED", waiting.seq))
    await prod.flush(timeout=2)
    if any("permissions violation" in v.lower() for v in pviol):
        failures.append(f"producer hit a permissions violation on an allowed path: {pviol}")
    await refused("producer purges CODIGO_JOBS", pjs.purge_stream("CODIGO_JOBS"))
    await refused("producer purges CODIGO_SCHEDULED", pjs.purge_stream("CODIGO_SCHEDULED"))
    await refused("producer deletes CODIGO_JOBS", pjs.delete_stream("CODIGO_JOBS"))
    await refused("producer creates a consumer", pjs.add_consumer("CODIGO_JOBS", ConsumerConfig(durable_name="x")))

    # consumer: bind, fetch, ack; dead-letter; fetch/delete by sequence; never enqueue.
    cons, wjs, cviol = await connect("codigo-consumer")
    await must("consumer reads its durable", wjs.consumer_info("CODIGO_JOBS", "codigo-ledger-post"))
    sub = await must("consumer binds its durable", wjs.pull_subscribe_bind("codigo-ledger-post", stream="CODIGO_JOBS"))
    if sub is not None:
        msgs = await must("consumer fetches a job", sub.fetch(1, timeout=2)) or []
        for m in msgs:
            await must("consumer acks", m.ack_sync(timeout=2))
    await must("consumer dead-letters", wjs.publish("codigo.dlq.webhook.deliver", b"{}", headers={"Codigo-Dlq-Reason": "permanent"}))
    await must("consumer gets a job by sequence", wjs.get_msg("CODIGO_JOBS", 2))
    await must("consumer deletes an exhausted job", wjs.delete_msg("CODIGO_JOBS", 2))
    await cons.flush(timeout=2)
    if any("permissions violation" in v.lower() for v in cviol):
        failures.append(f"consumer hit a permissions violation on an allowed path: {cviol}")
    cviol.clear()
    await refused("consumer purges CODIGO_JOBS", wjs.purge_stream("CODIGO_JOBS"))
    await refused("consumer deletes its durable", wjs.delete_consumer("CODIGO_JOBS", "codigo-ledger-post"))
    await refused("consumer enqueues through JetStream", wjs.publish("codigo.jobs.ledger.post", b"{}"))
    await refused("consumer schedules a job", wjs.publish(delayed, b"{}"))
    await cons.publish("codigo.jobs.ledger.post", b"{}")
    await cons.flush(timeout=2)
    await asyncio.sleep(0.3)
    if not any("permissions violation" in v.lower() for v in cviol):
        failures.append(f"consumer core-publish to codigo.jobs.ledger.post was not refused ({cviol})")

    # ctl: DLQ verbs.
    await must("ctl purges CODIGO_DLQ", cjs.purge_stream("CODIGO_DLQ"))
    await must("ctl replays to codigo.jobs", cjs.publish("codigo.jobs.ledger.post", b"{}", headers={"Nats-Msg-Id": "job-3"}))

    for nc in (ctl, prod, cons):
        await nc.close()
    return failures


def live_test(nats_server: str, conf_path: Path) -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="codigo-nats-") as tmp:
        conf = Path(tmp) / "server.conf"
        # include paths are relative to the including file
        (Path(tmp) / "permissions.conf").write_text(conf_path.read_text())
        conf.write_text(
            f'listen: "127.0.0.1:{port}"\n'
            f'jetstream {{ store_dir: "{tmp}/js", sync_interval: always }}\n'
            'include ./permissions.conf\n'
        )
        env = dict(os.environ, **TEST_PASSWORDS)
        proc = subprocess.Popen([nats_server, "-c", str(conf)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 10
            while time.time() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise AssertionError(f"nats-server exited: {proc.stderr.read().decode()}")
                    time.sleep(0.1)
            failures = asyncio.run(asyncio.wait_for(_flows(port), timeout=60))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
    if failures:
        raise AssertionError("NATS permission flows:\n  " + "\n  ".join(failures))

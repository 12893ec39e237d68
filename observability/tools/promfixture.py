#!/usr/bin/env python3
"""A throwaway real Prometheus holding known series, for tests.

    python3 promfixture.py serve --openmetrics FILE [--rules DIR] [--shift-to-now]

backfills FILE (OpenMetrics text with a timestamp in seconds on every sample) into a fresh
TSDB in a temporary directory, starts `prometheus` on a free 127.0.0.1 port with the rule
files of DIR loaded, waits until queries answer (and, with rules, until every rule group
has been evaluated twice, so rules that read other groups' results have data too), then
prints one line on stdout:

    PROMETHEUS_URL=http://127.0.0.1:PORT

and serves until SIGTERM or SIGINT, when it stops the server and deletes the directory.
Stop it with SIGTERM, not SIGKILL (Rust's Child::kill sends SIGKILL): a killed fixture
takes Prometheus with it (parent-death signal) but leaves its directory, which the next
fixture run removes.
Diagnostics go to stderr. Exit status: 0 after a clean stop, 1 when the fixture cannot be
set up or the server dies underneath it.

Rules are evaluated from server start only, at --evaluation-interval (default 1s): a
recording rule over [5m] needs samples from the last five minutes, so data should end
close to now (--shift-to-now moves the whole file so its newest sample is now). Samples
are never accepted in the future: blocks reaching past now would make the head refuse the
rule results.

Standard library only; needs `prometheus` and `promtool` (Debian package `prometheus`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import math
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Timestamps above this are milliseconds (this is the year 5138 in seconds).
_MS_THRESHOLD = 1e11


class FixtureError(Exception):
    """The fixture cannot be set up; the message says why and what to do."""


def log(msg: str) -> None:
    print(f"promfixture: {msg}", file=sys.stderr, flush=True)


def _split_sample(line: str) -> tuple[str, list[str], str]:
    """Splits an OpenMetrics sample line into (series, [value, timestamp...], exemplar).

    Label values may hold spaces, braces and escaped quotes, so the label set is scanned,
    not split.
    """
    i = 0
    n = len(line)
    while i < n and line[i] not in "{ ":
        i += 1
    if i < n and line[i] == "{":
        in_str = False
        while i < n:
            c = line[i]
            if in_str:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "}":
                i += 1
                break
            i += 1
    series, rest = line[:i], line[i:]
    exemplar = ""
    if " # " in rest:
        rest, exemplar = rest.split(" # ", 1)
        exemplar = " # " + exemplar
    return series, rest.split(), exemplar


def normalise_openmetrics(text: str, shift_to_now: bool, now: float) -> tuple[str, float, float]:
    """Validates the input against promtool's traps and returns (text, min_ts, max_ts).

    Traps: a missing final `# EOF` line, timestamps in milliseconds, samples without a
    timestamp, samples in the future.
    """
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[-1].strip() == "# EOF":
        lines.pop()
    samples: list[tuple[int, str, list[str], str]] = []
    for idx, line in enumerate(lines):
        if not line.strip() or line.startswith("#"):
            continue
        series, fields, exemplar = _split_sample(line)
        if len(fields) != 2:
            raise FixtureError(
                f"line {idx + 1}: expected '<series> <value> <timestamp>', got {line!r} "
                "(backfilled samples need a timestamp in seconds)")
        try:
            ts = float(fields[1])
        except ValueError as exc:
            raise FixtureError(f"line {idx + 1}: bad timestamp {fields[1]!r}") from exc
        if ts > _MS_THRESHOLD:
            raise FixtureError(
                f"line {idx + 1}: timestamp {fields[1]} looks like milliseconds; "
                "OpenMetrics timestamps are seconds")
        samples.append((idx, series, [fields[0], ts], exemplar))
    if not samples:
        raise FixtureError("no samples in the OpenMetrics input")
    stamps = [s[2][1] for s in samples]
    lo, hi = min(stamps), max(stamps)
    shift = (now - hi) if shift_to_now else 0.0
    if hi + shift > now + 1:
        raise FixtureError(
            f"newest sample is {hi + shift - now:.0f}s in the future; rule results at 'now' "
            "would be refused (use --shift-to-now or end the data at the present)")
    for idx, series, (value, ts), exemplar in samples:
        new_ts = ts + shift
        stamp = repr(round(new_ts, 3)) if not float(new_ts).is_integer() else str(int(new_ts))
        lines[idx] = f"{series} {value} {stamp}{exemplar}"
    lines.append("# EOF")
    return "\n".join(lines) + "\n", lo + shift, hi + shift


def _lock_workdir(workdir: Path) -> int:
    """Holds an exclusive lock on workdir/.lock for the fixture's lifetime (the fd is not
    inherited by Prometheus), so a later fixture can tell a live workdir from a leftover."""
    fd = os.open(workdir / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def sweep_stale_workdirs() -> None:
    """Removes workdirs of fixtures that died without cleaning up (SIGKILL): their lock is
    free. Prometheus itself went with them (parent-death signal)."""
    for d in Path(tempfile.gettempdir()).glob("promfixture-*"):
        lock = d / ".lock"
        try:
            if time.time() - lock.stat().st_mtime < 60:
                continue  # just created; its owner may not hold the lock yet
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        shutil.rmtree(d, ignore_errors=True)
        os.close(fd)
        log(f"removed leftover {d}")


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Child side of Popen: get SIGTERM when the fixture dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# The server is on loopback: never route it through an HTTP(S)_PROXY from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_json(url: str, timeout: float = 5.0) -> dict:
    with _LOCAL.open(url, timeout=timeout) as resp:
        return json.load(resp)


class PromFixture:
    """Backfills, starts and stops one Prometheus. Also usable as a context manager."""

    def __init__(self, openmetrics: Path, rules: Path | None = None, *,
                 evaluation_interval: str = "1s", shift_to_now: bool = False,
                 prometheus: str = "prometheus", promtool: str = "promtool",
                 timeout: float = 90.0):
        self.openmetrics = Path(openmetrics)
        self.rules = Path(rules) if rules else None
        self.evaluation_interval = evaluation_interval
        self.shift_to_now = shift_to_now
        self.prometheus = shutil.which(prometheus) or prometheus
        self.promtool = shutil.which(promtool) or promtool
        self.timeout = timeout
        self.workdir: Path | None = None
        self._lock_fd: int | None = None
        self.proc: subprocess.Popen | None = None
        self.url = ""

    # -- set-up ---------------------------------------------------------------------------

    def start(self) -> str:
        for tool in (self.prometheus, self.promtool):
            if not shutil.which(tool):
                raise FixtureError(f"{tool} not found; install the Debian package 'prometheus'")
        if not self.openmetrics.is_file():
            raise FixtureError(f"no such OpenMetrics file: {self.openmetrics}")
        if self.rules and not self.rules.is_dir():
            raise FixtureError(f"no such rule directory: {self.rules}")
        sweep_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix="promfixture-"))
        self._lock_fd = _lock_workdir(self.workdir)
        log(f"workdir {self.workdir}")
        try:
            retention_days = self._backfill()
            config = self._write_config()
            self._launch(config, retention_days)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _backfill(self) -> int:
        assert self.workdir
        now = time.time()
        text, lo, _hi = normalise_openmetrics(
            self.openmetrics.read_text(encoding="utf-8"), self.shift_to_now, now)
        src = self.workdir / "input.om"
        src.write_text(text, encoding="utf-8")
        data = self.workdir / "data"
        data.mkdir()
        res = subprocess.run([self.promtool, "tsdb", "create-blocks-from", "openmetrics", "-q",
                              str(src), str(data)], capture_output=True, text=True)
        if res.returncode != 0:
            raise FixtureError(f"promtool backfill failed: {res.stderr.strip() or res.stdout.strip()}")
        # Keep the oldest sample inside retention, or the server deletes it at start.
        return max(15, math.ceil((now - lo) / 86400) + 2)

    def _write_config(self) -> Path:
        assert self.workdir
        config = self.workdir / "prometheus.yml"
        rule_globs = []
        if self.rules:
            root = self.rules.resolve()
            rule_globs = [str(root / "*.yml"), str(root / "*.yaml")]
        # JSON is YAML: no PyYAML needed.
        config.write_text(json.dumps({
            "global": {"evaluation_interval": self.evaluation_interval, "scrape_interval": "1m"},
            "rule_files": rule_globs,
        }, indent=2), encoding="utf-8")
        res = subprocess.run([self.promtool, "check", "config", str(config)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise FixtureError(f"prometheus config or rules invalid:\n{res.stdout}{res.stderr}")
        return config

    def _launch(self, config: Path, retention_days: int) -> None:
        assert self.workdir
        logfile = self.workdir / "prometheus.log"
        # Another process may grab the probed port before Prometheus binds it: retry.
        for _attempt in range(5):
            port = free_port()
            with open(logfile, "wb") as out:
                self.proc = subprocess.Popen(
                    [self.prometheus,
                     f"--config.file={config}",
                     f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--storage.tsdb.retention.time={retention_days}d",
                     f"--web.listen-address=127.0.0.1:{port}",
                     "--log.level=warn"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=self.workdir, preexec_fn=_die_with_parent)
            log(f"prometheus pid {self.proc.pid} on 127.0.0.1:{port}")
            self.url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.1)
            if self.proc.poll() is None:
                return
            if "address already in use" not in self.log_tail():
                raise FixtureError(f"prometheus exited at start:\n{self.log_tail()}")
        raise FixtureError("no free port found for prometheus after 5 attempts")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        first_eval: dict[str, str] = {}
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise FixtureError(f"prometheus died while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise FixtureError(f"prometheus not ready after {self.timeout:.0f}s:\n{self.log_tail()}")
            try:
                q = http_json(f"{self.url}/api/v1/query?query=vector(1)")
                if q.get("status") != "success":
                    raise urllib.error.URLError("query not answered")
                if self.rules is None:
                    return
                groups = http_json(f"{self.url}/api/v1/rules")["data"]["groups"]
                if not groups:
                    raise FixtureError(f"no rule groups loaded from {self.rules}")
                # Two evaluations of every group: the second sees what other groups
                # recorded in the first.
                done = 0
                for g in groups:
                    last = g.get("lastEvaluation", "")
                    if last.startswith("0001-"):
                        continue
                    first_eval.setdefault(g["name"], last)
                    if first_eval[g["name"]] != last:
                        done += 1
                if done == len(groups):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            time.sleep(0.2)

    # -- tear-down ------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        if not self.workdir:
            return ""
        try:
            text = (self.workdir / "prometheus.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(args: argparse.Namespace) -> int:
    fixture = PromFixture(args.openmetrics, args.rules,
                          evaluation_interval=args.evaluation_interval,
                          shift_to_now=args.shift_to_now, prometheus=args.prometheus,
                          promtool=args.promtool, timeout=args.timeout)
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        url = fixture.start()
        print(f"PROMETHEUS_URL={url}", flush=True)
        while fixture.proc and fixture.proc.poll() is None:
            time.sleep(0.5)
        log(f"prometheus exited unexpectedly:\n{fixture.log_tail()}")
        return 1
    except KeyboardInterrupt:
        return 0 if stopping else 130
    except FixtureError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        fixture.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="backfill, start Prometheus, print its URL, serve until SIGTERM")
    p.add_argument("--openmetrics", required=True, type=Path,
                   help="OpenMetrics text, every sample with a timestamp in seconds")
    p.add_argument("--rules", type=Path, help="directory of *.yml / *.yaml rule files to load")
    p.add_argument("--evaluation-interval", default="1s",
                   help="rule evaluation interval (default 1s)")
    p.add_argument("--shift-to-now", action="store_true",
                   help="move all timestamps so the newest sample is now")
    p.add_argument("--timeout", type=float, default=90.0,
                   help="seconds to wait for the server and the first rule evaluations")
    p.add_argument("--prometheus", default="prometheus", help="prometheus binary")
    p.add_argument("--promtool", default="promtool", help="promtool binary")
    args = parser.parse_args(argv)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())

"""Live event latency: from a worker's write of an event to the browser's websocket receiving it.

Two configurations, each in a child process of its own:

- embedded: SQLite file, no Redis: the "tail" transport (daphne polls the events table every
  ORCHESTRATOR_EVENT_POLL_SECONDS while a websocket is connected);
- hosted: a throwaway PostgreSQL database and Redis: the "push" transport (the writing process
  sends through channels-redis from its pusher thread).

Each child migrates, creates a superuser, a project and an agent, starts a real daphne and opens
the agent page's websocket (`/ws/agents/<id>/`) as that user (session cookie, Origin header),
with a small RFC 6455 client of our own. It sends `{"after": N - 1}` where N is the agent's last
event, and waits for event N to come back: then the consumer has joined its groups. A writer
subprocess (a "worker") then calls `event_record(agent, "text", {"text": "i|time.time()"})`, each
in its own transaction: `--steady` events at `--rate` per second, a pause, then a burst of
`--burst` events as fast as it can. Latency = time.time() when the frame carrying the event was
read - the time in its text (taken just before the write; both on this machine's clock), parsed
out of the `<li class="ev text" data-seq="N">` fragments. Checks that every event arrived
exactly once and in order. Aims (issue 5): p99 under 100 ms with Redis, under 500 ms embedded.

    .venv/bin/python bench/event_latency.py [--steady 300] [--rate 20] [--burst 500] [--modes embedded,hosted]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    REDIS_URL,
    ROOT,
    app_env,
    code_version,
    django_setup,
    emit_result,
    log,
    machine_busy_percent,
    percentile,
    postgres_database,
    run_child,
    temp_dir,
)

SCRIPT = Path(__file__).resolve()
MODES = {
    "embedded": "SQLite, no Redis: tail transport",
    "hosted": "PostgreSQL + Redis: push transport",
}
TEXT_EVENT = re.compile(r'<li class="ev text" data-seq="(\d+)">\s*<span class="pre">([^<]*)</span>')


# --- a minimal websocket client (RFC 6455: text frames, ping/pong, close) ----------------------


class WebSocket:
    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int, path: str, headers: dict[str, str]) -> WebSocket:
        reader, writer = await asyncio.open_connection(host, port)
        key = base64.b64encode(os.urandom(16))
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key.decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = response.split("\r\n", 1)[0]
        if " 101 " not in status:
            raise ConnectionError(f"websocket handshake refused: {status}")
        accept = base64.b64encode(hashlib.sha1(key + cls.GUID).digest()).decode()
        if f"sec-websocket-accept: {accept.lower()}" not in response.lower():
            raise ConnectionError("websocket handshake: wrong Sec-WebSocket-Accept")
        return cls(reader, writer)

    async def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        repeated = (mask * (length // 4 + 1))[:length]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self._send_frame(0x1, text.encode())

    async def recv(self) -> str | None:
        """The next text message (None once the server closed); answers pings on the way."""
        parts: list[bytes] = []
        while True:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            if second & 0x80:
                raise ConnectionError("the server sent a masked frame")
            payload = await self.reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                await self._send_frame(0xA, payload)
            elif opcode == 0x8:
                return None
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts).decode()

    async def close(self) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            await self._send_frame(0x8, struct.pack("!H", 1000))
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()


# --- the writer ("worker") subprocess ----------------------------------------------------------


def writer(args: argparse.Namespace) -> None:
    """Record the events, print the write timings as one JSON line, then stay alive (the pusher
    thread of this process must get to send the last events) until stdin closes."""
    import django

    django.setup()
    from django.db import transaction

    from agents.events import event_record

    def record(i: int) -> None:
        with transaction.atomic():
            event_record(args.agent, "text", {"text": f"{i}|{time.time():.6f}"})

    interval = 1 / args.rate
    start = time.monotonic()
    steady_calls = []
    for i in range(args.steady):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        record(i)
        steady_calls.append(time.perf_counter() - began)
    time.sleep(args.pause)
    burst_began = time.time()
    for i in range(args.steady, args.steady + args.burst):
        record(i)
    burst_written = time.time()
    print(
        json.dumps(
            {
                "steady_call_p50": percentile(steady_calls, 50),
                "steady_call_max": max(steady_calls),
                "burst_write_s": burst_written - burst_began,
            }
        ),
        flush=True,
    )
    sys.stdin.read()


# --- one configuration -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log_file: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited with {proc.returncode}:\n{log_file.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"daphne did not listen on {port} within {timeout} s:\n{log_file.read_text()}")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process's session, then SIGKILL whatever is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def channel_layer_cleanup(prefix: str) -> int:
    """Delete the channels-redis keys under our prefix (groups expire only after a day)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


async def receive_all(
    ws: WebSocket, expected: int, first_seq: int, idle_timeout: float
) -> tuple[list[tuple[float, int, str]], int]:
    """Read frames until `expected` text events numbered from `first_seq` are in, or the
    connection stays silent for `idle_timeout`. Returns (receive time, seq, text) per event
    and the number of frames read."""
    received: list[tuple[float, int, str]] = []
    frames = 0
    wanted_last = first_seq + expected - 1
    while not received or received[-1][1] < wanted_last:
        try:
            message = await asyncio.wait_for(ws.recv(), idle_timeout)
        except TimeoutError:
            break
        now = time.time()
        if message is None:
            break
        frames += 1
        received.extend((now, int(seq), text) for seq, text in TEXT_EVENT.findall(message))
    return received, frames


def latency_stats(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


def child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    queue_name = f"bench-events-{uuid.uuid4().hex[:8]}"
    busy_before = machine_busy_percent(1)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(temp_dir("bench-events-"))
        if mode == "embedded":
            database_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        else:
            database_url = stack.enter_context(postgres_database("bench_events"))
            stack.callback(lambda: log(f"removed {channel_layer_cleanup(queue_name)} channel-layer keys"))
        env = app_env(
            data_dir=tmp,
            database_url=database_url,
            fake_url="http://127.0.0.1:9",
            redis=mode == "hosted",
            queue_name=queue_name,
            extra={"ALLOWED_HOSTS": "127.0.0.1,localhost,testserver"},
        )
        django_setup(env)
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.db import connection
        from django.test import Client

        from agents.events import event_record
        from agents.models import Agent, Project, Role
        from teams.selectors import default_team

        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        client = Client()
        client.force_login(user)
        session_id = client.cookies[settings.SESSION_COOKIE_NAME].value
        project = Project.objects.create(
            name="bench", repo_path=str(tmp / "repo"), base_branch="main", team=default_team()
        )
        role = Role.objects.order_by("pk").first()
        agent = Agent.objects.create(project=project, role=role, task="Latency probe", model="bench")
        for n in range(3):
            event_record(agent.pk, "text", {"text": f"before {n}"})
        last_seq = Agent.objects.get(pk=agent.pk).last_event_seq
        connection.close()

        port = free_port()
        daphne_log = tmp / "daphne.log"
        with daphne_log.open("w") as out:
            daphne = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "orchestrator.asgi:application",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        stack.callback(stop_process, daphne)
        wait_for_port(port, daphne, daphne_log)
        log(f"{mode}: daphne on port {port} ({settings.ORCHESTRATOR_EVENT_TRANSPORT} transport)")

        writer_out = tmp / "writer.out"
        writer_err = tmp / "writer.err"

        async def run() -> tuple[list[tuple[float, int, str]], int]:
            ws = await WebSocket.connect(
                "127.0.0.1",
                port,
                f"/ws/agents/{agent.pk}/",
                {"Origin": f"http://127.0.0.1:{port}", "Cookie": f"sessionid={session_id}"},
            )
            try:
                await ws.send_text(json.dumps({"after": last_seq - 1}))
                ready, _ = await asyncio.wait_for(receive_all(ws, 1, last_seq, 10), 15)
                if [seq for _, seq, _ in ready] != [last_seq]:
                    raise RuntimeError(f"catch-up after {last_seq - 1} gave {ready}")
                with writer_out.open("w") as out, writer_err.open("w") as err:
                    proc = subprocess.Popen(
                        [
                            sys.executable,
                            str(SCRIPT),
                            "--writer",
                            f"--agent={agent.pk}",
                            f"--steady={args.steady}",
                            f"--rate={args.rate}",
                            f"--burst={args.burst}",
                            f"--pause={args.pause}",
                        ],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                try:
                    return await receive_all(ws, args.steady + args.burst, last_seq + 1, 15)
                finally:
                    proc.stdin.close()
                    stop_process(proc)
            finally:
                await ws.close()

        received, frames = asyncio.run(run())
        writes = json.loads(writer_out.read_text().strip().splitlines()[-1]) if writer_out.read_text() else {}
        if not writes:
            raise RuntimeError(f"the writer printed nothing:\n{writer_err.read_text()}")

        # One sample per event received: (index in the writer's order, seq, written at, received at).
        samples = []
        for received_at, seq, text in received:
            index, written_at = text.split("|")
            samples.append((int(index), seq, float(written_at), received_at))
        seqs = [seq for _, seq, _, _ in samples]
        total = args.steady + args.burst
        expected = list(range(last_seq + 1, last_seq + 1 + total))
        exactly_once_in_order = seqs == expected and [s[0] for s in samples] == list(range(total))
        steady = [got - wrote for index, _, wrote, got in samples if index < args.steady]
        burst_samples = [(wrote, got) for index, _, wrote, got in samples if index >= args.steady]
        burst = [got - wrote for wrote, got in burst_samples]
        burst_completion = (
            max(got for _, got in burst_samples) - min(wrote for wrote, _ in burst_samples)
            if burst_samples
            else None
        )
        daphne_errors = [
            line for line in daphne_log.read_text().splitlines() if "Traceback" in line or "ERROR" in line
        ]
        return {
            "mode": mode,
            "config": MODES[mode],
            "transport": settings.ORCHESTRATOR_EVENT_TRANSPORT,
            "poll_s": settings.ORCHESTRATOR_EVENT_POLL_SECONDS,
            "code": code_version(),
            "machine_busy_before_pct": busy_before,
            "first_event_s": steady[0] if steady else None,
            "steady": latency_stats(steady),
            "burst": latency_stats(burst),
            "burst_completion_s": burst_completion,
            "burst_write_s": writes.get("burst_write_s"),
            "steady_write_call_p50": writes.get("steady_call_p50"),
            "frames": frames,
            "received": len(received),
            "expected": total,
            "exactly_once_in_order": exactly_once_in_order,
            "duplicates": len(seqs) - len(set(seqs)),
            "missing": sorted(set(expected) - set(seqs))[:20],
            "out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b <= a),
            "daphne_errors": daphne_errors[:5],
        }


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--steady", type=int, default=300, help="events written at --rate")
    parser.add_argument("--rate", type=float, default=20, help="events per second in the steady phase")
    parser.add_argument("--burst", type=int, default=500, help="events then written as fast as possible")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between the phases")
    parser.add_argument("--modes", default="embedded,hosted")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--agent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        writer(args)
        return
    if args.child:
        emit_result(child(args.child, args))
        return

    forwarded = [
        f"--steady={args.steady}",
        f"--rate={args.rate}",
        f"--burst={args.burst}",
        f"--pause={args.pause}",
    ]
    results = [run_child(SCRIPT, mode, forwarded, timeout=300) for mode in args.modes.split(",")]
    print()
    print(
        f"Event latency: event_record in a worker process -> the agent page's websocket received it "
        f"({args.steady} events at {args.rate:g}/s, then a burst of {args.burst})"
    )
    header = (
        f"{'mode':<9} {'transport':<9} | {'steady p50':>10} {'p99':>7} {'max':>7} | "
        f"{'burst p50':>9} {'p99':>7} {'max':>7} | {'burst done':>10} {'written in':>10} | {'exactly once':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"ERROR: {r['error']}")
            continue
        s, b = r["steady"], r["burst"]
        print(
            f"{r['mode']:<9} {r['transport']:<9} | {ms(s.get('p50')):>10} {ms(s.get('p99')):>7} {ms(s.get('max')):>7} | "
            f"{ms(b.get('p50')):>9} {ms(b.get('p99')):>7} {ms(b.get('max')):>7} | "
            f"{ms(r['burst_completion_s']):>10} {ms(r['burst_write_s']):>10} | "
            f"{'yes' if r['exactly_once_in_order'] else 'NO':>12}"
        )
    print()
    print("All times in ms. burst done: first burst event written -> last one received;")
    print("written in: the writer's time to record the burst (each event its own transaction).")
    for r in results:
        if "error" in r:
            continue
        print(
            f"{r['mode']}: {r['config']} (poll {r['poll_s']} s); {r['code']}; machine {r['machine_busy_before_pct']:.0f}% "
            f"busy before; {r['received']}/{r['expected']} events in {r['frames']} frames; the first event "
            f"{ms(r['first_event_s'])} ms; one write "
            f"(event_record + commit) p50 {ms(r['steady_write_call_p50'])} ms"
        )
        if not r["exactly_once_in_order"]:
            print(
                f"  PROBLEMS: duplicates {r['duplicates']}, missing {r['missing']}, out of order {r['out_of_order']}"
            )
        if r["daphne_errors"]:
            print(f"  daphne log: {r['daphne_errors']}")
    print("Aims (issue 5): p99 < 100 ms with Redis, < 500 ms embedded.")


if __name__ == "__main__":
    main()

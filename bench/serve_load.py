"""Benchmark: `serve` under load, the previous server and this one side by side in one run.

Clients post the drawing page's own request (a real test digit as a 280x280 PNG) as fast as answers come,
each on its own keep-alive connection, for a fixed time. Every level runs against every server in turn, so
the machine's load falls on all of them. Reports requests/s, p50/p99 latency and failures (anything but a
200 with a label: resets, refusals, timeouts). The load generator shares the machine's cores.

The previous server is checked out from git (`--baseline`, default: the server before its preparation moved
to worker processes and its HTTP to h11 of our own) into a temporary folder and run from there on the same
model. Both run with their defaults. Needs `dvc repro` (the model and test split).
Writes bench/results/local/serve_load.json (`--update`: the committed bench/results/ copy).
"""

from __future__ import annotations

import asyncio
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import h11
import numpy as np
from PIL import Image

from bench.report_file import machine, write_report
from pipeline.data.prepared import load_split

ROOT = Path(__file__).resolve().parent.parent
REQUEST_SECONDS = 30.0  # a request without an answer by then counts as failed


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1


def canvas_png(data: Path) -> bytes:
    """The first test digit as the drawing page sends it: white on black, 280x280, PNG."""
    digit = load_split(data / "test.npz").images[0].numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.kron(digit, np.ones((10, 10), dtype=np.uint8))).save(buffer, "PNG")
    return buffer.getvalue()


async def exchange(http: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   payload: bytes) -> tuple[int, bool, bytes]:
    """Post `payload` and read the answer (h11 frames both): status, whether the server keeps the connection,
    and the body."""
    writer.write(http.send(h11.Request(method="POST", target="/predict", headers=[
        ("Host", "127.0.0.1"), ("Content-Type", "image/png"), ("Content-Length", str(len(payload)))])))
    writer.write(http.send(h11.Data(data=payload)) + http.send(h11.EndOfMessage()))
    status, body = 0, bytearray()
    while not isinstance(event := http.next_event(), h11.EndOfMessage):
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(65536))  # b"" (the server closed) ends in h11's error
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
    keep = http.our_state is h11.DONE and http.their_state is h11.DONE
    if keep:
        http.start_next_cycle()
    return status, keep, bytes(body)


async def client(port: int, payload: bytes, until: float, tally: Tally) -> None:
    """One user: post, wait for the answer, post again, until `until` (at least once); reconnect whenever the
    server closes."""
    connection: tuple[h11.Connection, asyncio.StreamReader, asyncio.StreamWriter] | None = None
    first = True
    while first or time.monotonic() < until:
        first = False
        started = time.monotonic()
        try:
            if connection is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), REQUEST_SECONDS)
                connection = h11.Connection(h11.CLIENT), reader, writer
            status, keep, body = await asyncio.wait_for(exchange(*connection, payload), REQUEST_SECONDS)
            if status == 200 and b'"label"' in body:
                tally.latencies.append(time.monotonic() - started)
            else:
                tally.fail(f"HTTP {status}")
            if not keep:
                connection[2].close()
                connection = None
        except (OSError, h11.RemoteProtocolError) as exc:
            tally.fail(type(exc).__name__)
            connection = None
        except TimeoutError:
            tally.fail("no answer within 30 s")
            connection = None
    if connection is not None:
        connection[2].close()


async def load(port: int, payload: bytes, clients: int, seconds: float) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(port, payload, until, tally) for _ in range(clients)))
    return tally


def summary(tally: Tally, seconds: float) -> dict[str, object]:
    latencies = sorted(tally.latencies)
    def quantile(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else 0.0
    return {"requests_per_s": round(len(latencies) / seconds, 1), "p50_ms": quantile(0.5), "p99_ms": quantile(0.99),
            "mean_ms": round(1000 * statistics.mean(latencies), 1) if latencies else 0.0,
            "answered": len(latencies), "failed": sum(tally.failures.values()), "failures": tally.failures}


def start_server(code: Path, model: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-m", "stages.serve", "--model", str(model), "--port", "0", *extra],
                               cwd=code, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("serving "):
        raise click.ClickException(f"the server in {code} did not start: {line!r}")
    return process, int(line.split(" on http://")[1].split(":")[1].split("/")[0])


def checkout(revision: str, folder: Path) -> Path:
    """`revision`'s tree in `folder` (git archive: no work tree of ours is touched)."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


@click.command(help=__doc__)
@click.option("--baseline", default="32daa55", show_default=True, help="Revision of the previous server.")
@click.option("--levels", default="1,16,64", show_default=True, help="Concurrent clients, comma-separated.")
@click.option("--seconds", default="10,10,30", show_default=True, help="Seconds per level, comma-separated.")
@click.option("--model", default=ROOT / "models" / "model.onnx", type=click.Path(path_type=Path), show_default=True)
@click.option("--data", default=ROOT / "data" / "prepared", type=click.Path(path_type=Path), show_default=True)
@click.option("--update", is_flag=True, help="Replace the committed results instead of writing to results/local/.")
def main(baseline: str, levels: str, seconds: str, model: Path, data: Path, update: bool) -> None:
    payload = canvas_png(data)
    with tempfile.TemporaryDirectory() as tmp:
        servers = {f"previous ({baseline})": (checkout(baseline, Path(tmp)), ()), "this one": (ROOT, ())}
        running = {name: start_server(code, model.resolve(), *extra) for name, (code, extra) in servers.items()}
        for _, port in running.values():  # each answers one request first: its start-up is not measured
            warm = asyncio.run(load(port, payload, 1, 0))
            if warm.failures:
                raise click.ClickException(f"the server on port {port} failed its first request: {warm.failures}")
        results: dict[str, dict[str, object]] = {name: {} for name in servers}
        try:
            for clients, length in zip(map(int, levels.split(",")), map(float, seconds.split(",")), strict=True):
                for name, (_, port) in running.items():
                    result = summary(asyncio.run(load(port, payload, clients, length)), length)
                    results[name][str(clients)] = result
                    click.echo(f"{clients:3d} clients, {name}: {result}")
        finally:
            for process, _ in running.values():
                process.terminate()
                process.wait(timeout=30)
    report = {"machine": machine(), "payload_bytes": len(payload), "levels": levels, "seconds": seconds,
              "servers": results}
    click.echo(f"-> {write_report('serve_load', report, update)}")


if __name__ == "__main__":
    main()

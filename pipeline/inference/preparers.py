"""Requests' bodies turned into the model's 28x28 readings in worker processes, each with a hard time limit.

Decoding and preparing an image is the costly, input-driven part of a request. In a process of its own it
never holds the server's event loop (JSON parsing and Pillow's Python loops take the GIL), and a request
that overruns its time is stopped for real: its process is ended and a fresh one takes its place, so
neither the server nor the other clients wait behind it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from pipeline.common.errors import PipelineError
from pipeline.inference.digit_image import decode_image, readings
from pipeline.inference.pixels_json import RequestError, pixels_from_json

READY = "ready"
PIPE_BYTES = 16 * 1024  # what a pipe takes at once on Linux and macOS: a smaller upload is written without waiting
ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    """A preparing process (`python -m pipeline.inference.preparers MAX_PIXELS MAX_JSON`): requests come on
    standard input and answers go out on standard output, each one a pickled message."""
    max_pixels, max_json = (int(arg) for arg in sys.argv[1:3])
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # anything a library prints goes to the log, not into the answers
    requests = Connection(os.dup(0), writable=False)
    answers.send(READY)
    while True:
        try:
            kind, body = requests.recv_bytes().decode(), requests.recv_bytes()
        except (EOFError, OSError):  # the server is gone
            return
        answers.send(_answer(kind, body, max_pixels, max_json))
        del body


def _answer(kind: str, body: bytes, max_pixels: int, max_json: int) -> tuple[Any, ...]:
    """("ok", K x 28 x 28 float32 readings), ("refused", status, message) for a bad body, or ("fault", traceback)."""
    try:
        image = pixels_from_json(body, max_pixels, max_json) if kind == "json" else \
            decode_image(body, "the image", max_pixels)
        return "ok", readings(image, "the image")
    except RequestError as exc:
        return "refused", exc.status, str(exc)
    except PipelineError as exc:
        return "refused", 422, str(exc)
    except MemoryError:
        return "refused", 413, "the image needs more memory than the server gives one request"
    except Exception:  # a fault of ours: the server logs it and answers 500
        return "fault", traceback.format_exc()


class _Worker:
    """One preparing process and the two ends of its pipes. A process of its own (not multiprocessing's
    spawn, which would import the server's whole main module again in it): numpy, Pillow and scipy only."""

    def __init__(self, max_pixels: int, max_json: int) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.inference.preparers", str(max_pixels),
                                         str(max_json)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.requests = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.connection = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()

    def wait_ready(self, seconds: float) -> None:
        if not self.connection.poll(seconds) or self.connection.recv() != READY:
            self.stop()
            raise RuntimeError(f"a preparing process did not start within {seconds:g} s")

    async def answer(self, kind: str, body: bytes | bytearray, seconds: float) -> tuple[Any, ...]:
        """The worker's answer; ("overran",) or ("died",) when it was stopped or ended by itself. Waits on
        the event loop, not in a thread; only an upload too large for the pipe is written by one."""
        loop = asyncio.get_running_loop()
        try:
            if len(body) <= PIPE_BYTES:
                self._send(kind, body)
            else:
                await anyio.to_thread.run_sync(self._send, kind, body)
            readable = loop.create_future()
            loop.add_reader(self.connection.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await asyncio.wait_for(readable, seconds)
                return self.connection.recv()
            except TimeoutError:
                outcome: tuple[Any, ...] = ("overran",)
            finally:
                loop.remove_reader(self.connection.fileno())
        except (EOFError, OSError):
            outcome = ("died",)
        self.stop()
        return outcome

    def _send(self, kind: str, body: bytes | bytearray) -> None:
        self.requests.send_bytes(kind.encode())
        self.requests.send_bytes(body)  # as it is: no pickled copy of an upload

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.requests.close()
        self.connection.close()


class Preparers:
    """`count` preparing processes; `prepare` waits for a free one and gives it at most `seconds`."""

    def __init__(self, count: int, seconds: float, max_pixels: int, max_json: int) -> None:
        self.count, self.seconds, self.max_pixels, self.max_json = count, seconds, max_pixels, max_json
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._replacing: set[asyncio.Task[None]] = set()
        self._workers: set[_Worker] = set()
        self._closed = False

    async def start(self) -> None:
        await asyncio.gather(*(self._add() for _ in range(self.count)))

    async def _add(self) -> None:
        worker = await anyio.to_thread.run_sync(self._started_worker)
        if self._closed:  # a replacement that finished starting after close()
            worker.stop()
            return
        self._workers.add(worker)
        self._idle.put_nowait(worker)

    def _started_worker(self) -> _Worker:
        worker = _Worker(self.max_pixels, self.max_json)
        worker.wait_ready(60)
        return worker

    async def prepare(self, kind: str, body: bytes | bytearray) -> np.ndarray:
        """The body ("image" or "json") as the model's 28x28 readings (`digit_image.readings`), or a RequestError."""
        worker = await self._idle.get()
        answer = await worker.answer(kind, body, self.seconds)
        if answer[0] in ("overran", "died"):  # a fresh process takes its place while this request is answered
            self._workers.discard(worker)
            task = asyncio.create_task(self._add())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)
            if answer[0] == "died":
                raise RequestError(422, "the image could not be prepared: its decoder failed")
            raise RequestError(422, f"the image took more than {self.seconds:g} s to prepare and was "
                                        "stopped: send a smaller or simpler image of the digit")
        self._idle.put_nowait(worker)
        if answer[0] == "fault":
            raise RuntimeError(f"preparing the image failed in its process:\n{answer[1]}")
        if answer[0] == "refused":
            raise RequestError(answer[1], answer[2])
        return answer[1]

    def pids(self) -> set[int]:
        """The preparing processes now running."""
        return {worker.process.pid for worker in self._workers}

    async def close(self) -> None:
        """Stop every preparing process, a replacement still starting included."""
        self._closed = True
        for worker in self._workers:
            worker.stop()
        self._workers.clear()
        await asyncio.gather(*self._replacing, return_exceptions=True)


if __name__ == "__main__":
    main()

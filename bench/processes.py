"""Helpers for benchmarks that start servers in child processes: a free loopback port,
waiting until a child answers (or failing at once when it exits), and `Child`, a restartable
child process in a session of its own (bench/harness.py kills and restarts them)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until `url` answers below 500; SystemExit when `proc` exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


class Child:
    """A child process in a session of its own, so that a signal reaches everything it started
    (a parser sandbox, say); restartable with the same command, environment and log file.

    `ready` is polled after each start until it returns True (or the child exits, or `timeout`
    passes); `kill` signals the whole process group and reaps the child."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        ready: Callable[[Child], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (see `wait_ready`)."""
        if self.alive():
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} of {self.name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            if self.ready is None or self.ready(self):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s: {self.log_tail()}")

    def start(self, timeout: float = 120) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
        """Signal the process group, wait for the child (SIGKILL after `timeout`), then
        SIGKILL whatever else is left in its group, and reap the child."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if not self._exited(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._exited(timeout)
        # Not reaped yet, so the group's id cannot have been handed to another process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL after `grace` seconds."""
        self.kill(signal.SIGTERM, grace)

    def _exited(self, timeout: float) -> bool:
        """Wait until the child has exited, without reaping it."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped already
                return True
            if info is not None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def http_ready(url: str) -> Callable[[Child], bool]:
    """A `Child.ready` check: `url` answers 200."""

    def check(_: Child) -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def log_ready(marker: str) -> Callable[[Child], bool]:
    """A `Child.ready` check: the current start's part of the log contains `marker`."""

    def check(child: Child) -> bool:
        text = child.log_tail(200_000)
        return marker in text.rsplit(f"--- start {child.starts} of ", 1)[-1]

    return check

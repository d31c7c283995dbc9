"""Run the real `asana-export-bot` console script as a subprocess (restarts, signals, the HTTP edge)."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"

#: Watching in seconds instead of minutes: polls every 0.5-1 s, recovery every 0.5 s.
FAST_WATCH = {
    "TICK_SECONDS": "0.2",
    "RECOVER_SECONDS": "0.5",
    "POLL_INITIAL_SECONDS": "0.5",
    "POLL_MAX_SECONDS": "1",
    "POLL_JITTER": "0",
    "PAUSED_RETRY_SECONDS": "1",
    "NOTIFY_GRACE_SECONDS": "2",
    "LEASE_SECONDS": "10",
}


def free_port() -> int:
    """A port nobody listens on right now (tiny race accepted: tests are local)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_script() -> str:
    """The installed entry point next to this interpreter, as a user would run it."""
    candidate = Path(sys.executable).parent / "asana-export-bot"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("asana-export-bot")
    if not found:
        raise RuntimeError("asana-export-bot is not installed: pip install -e '.[dev]'")
    return found


class BotProcess:
    """One `asana-export-bot run` process with its own port, database and log file."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        *,
        name: str = "bot",
        max_open_files: int | None = None,
    ) -> None:
        self.workdir = workdir
        #: A soft RLIMIT_NOFILE for the bot alone (the test process keeps its own).
        self.max_open_files = max_open_files
        self.port = int(env.get("PORT") or free_port())
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.env.setdefault("LOG_LEVEL", "DEBUG")
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after = 0.0

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    @property
    def health_url(self) -> str:
        """Liveness: 200 while the process serves."""
        return f"http://127.0.0.1:{self.port}/healthz"

    @property
    def ready_url(self) -> str:
        """Readiness: 503 naming the failing part (database, scheduler, slack, websocket)."""
        return f"http://127.0.0.1:{self.port}/readyz"

    def launch(self) -> BotProcess:
        """Start without waiting for anything (for a bot that cannot become healthy)."""
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [console_script(), "run"],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_files if self.max_open_files else None,
            )
        return self

    def start(self, *, timeout: float = 20.0) -> BotProcess:
        """Start and wait until /healthz answers: the process serves.

        In HTTP mode it serves once the database, the scheduler and the start-up auth.test are
        done, as before. In Socket Mode it now serves before the websocket connects (so /readyz
        can say so): wait for the connection (FakeSlack.wait_for_socket_connection) or /readyz.
        Not /readyz here: tests that start the bot with Slack failing must still get a bot.
        """
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bot exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.health_url, timeout=0.5).status_code == 200:
                    self.ready_after = time.monotonic() - self.started_at
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"bot did not become healthy in {timeout}s:\n{self.logs()}")

    def _limit_files(self) -> None:
        """Runs in the child before exec: lower its soft limit on open files."""
        assert self.max_open_files is not None
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, hard))

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait: the clean shutdown path."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

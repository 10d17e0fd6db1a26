"""The progress bar of a provisioning run, on stderr (stdout keeps the summary).

On a terminal one line is redrawn: `[4/9] ########-------- upload firmware  22.5/40.9 KB`;
elsewhere (a log, CI) each step prints a line when it starts and when it ends. Every step's
duration is kept in `timings` for the summary and the benchmark.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

BAR = 24


class Progress:
    def __init__(
        self, steps: Sequence[str], stream: TextIO | None = None, *, tty: bool | None = None,
        quiet: bool = False,
    ) -> None:
        self.steps = list(steps)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self._index = 0
        self._label = ""
        self._started = 0.0
        self._detail = ""
        self._fraction = 0.0

    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text)
            self.stream.flush()

    def _line(self, text: str) -> None:
        """A finished line (on a terminal, in place of the bar)."""
        self._write(("\r\x1b[K" if self.tty else "") + text + "\n")

    def _draw(self) -> None:
        n = len(self.steps)
        done = (self._index - 1 + self._fraction) / n if n else 1.0
        filled = int(done * BAR)
        bar = "#" * filled + "-" * (BAR - filled)
        elapsed = time.monotonic() - self._started
        self._write(
            f"\r[{self._index}/{n}] {bar} {self._label}  {self._detail}  {elapsed:.1f} s\x1b[K"
        )

    @contextmanager
    def step(self, key: str) -> Iterator[None]:
        """Runs one named step (`key` must be one of `steps`)."""
        self._index = self.steps.index(key) + 1
        self._label = key
        self._detail = ""
        self._fraction = 0.0
        self._started = time.monotonic()
        n = len(self.steps)
        if self.tty:
            self._draw()
        else:
            self._write(f"[{self._index}/{n}] {key} ...\n")
        try:
            yield
        except BaseException:
            took = time.monotonic() - self._started
            self.timings[key] = self.timings.get(key, 0.0) + took
            self._line(f"[{self._index}/{n}] {key}: FAILED after {took:.1f} s")
            raise
        took = time.monotonic() - self._started
        self.timings[key] = self.timings.get(key, 0.0) + took
        detail = f" ({self._detail})" if self._detail else ""
        self._line(f"[{self._index}/{n}] {key}: ok{detail} {took:.2f} s")

    def advance(self, done: int, total: int, unit: str = "KB") -> None:
        """Progress within the current step (bytes uploaded, seconds waited, ...)."""
        self._fraction = min(1.0, done / total) if total else 1.0
        if unit == "KB":
            self._detail = f"{done / 1024:.1f}/{total / 1024:.1f} KB"
        else:
            self._detail = f"{done}/{total} {unit}"
        if self.tty:
            self._draw()

    def detail(self, text: str) -> None:
        self._detail = text
        if self.tty:
            self._draw()

    def note(self, text: str) -> None:
        """A line of its own (a warning, what the technician must do now)."""
        self._line(text)
        if self.tty and self._label:
            self._draw()

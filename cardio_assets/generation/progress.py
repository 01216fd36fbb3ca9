"""Steady-rate progress logging and loss-curve bookkeeping for the training loops."""

from __future__ import annotations

import time
from typing import Callable


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Logs `label step i/n, loss, steps/s, time left` at most every `every_seconds`.

    `update` is called once per optimizer step; the rate counts steps done in this call only
    (a resumed run does not report the checkpoint's steps as fast ones).
    """

    def __init__(
        self,
        label: str,
        total: int,
        start: int = 0,
        every_seconds: float = 10.0,
        log: Callable[[str], None] = print,
        unit: str = "step",
    ) -> None:
        self.label, self.total, self.start = label, int(total), int(start)
        self.every, self.log, self.unit = float(every_seconds), log, unit
        self.t0 = self.last = time.perf_counter()
        self.window: list[float] = []
        self.step = self.start

    def update(self, step: int, loss: float | None = None) -> None:
        self.step = int(step)
        if loss is not None:
            self.window.append(float(loss))
        now = time.perf_counter()
        if now - self.last >= self.every or self.step >= self.total:
            self.emit(now)

    def emit(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        done = self.step - self.start
        elapsed = max(now - self.t0, 1e-9)
        rate = done / elapsed
        left = (self.total - self.step) / rate if rate > 0 else float("nan")
        loss = f" loss {sum(self.window) / len(self.window):.4f}" if self.window else ""
        left_s = _fmt_seconds(left) if left == left else "?"
        self.log(
            f"{self.label} {self.unit} {self.step}/{self.total}{loss} "
            f"{rate:.2f} {self.unit}s/s, {left_s} left"
        )
        self.window.clear()
        self.last = now

    @property
    def rate(self) -> float:
        return (self.step - self.start) / max(time.perf_counter() - self.t0, 1e-9)


def subsample_curve(losses: list[float], max_points: int = 200, first_step: int = 1) -> list[list[float]]:
    """[[step, mean loss of its window], ...] with at most `max_points` windows."""
    n = len(losses)
    if n == 0:
        return []
    width = max(1, -(-n // max_points))
    out = []
    for i in range(0, n, width):
        chunk = losses[i : i + width]
        out.append([first_step + i + len(chunk) - 1, round(sum(chunk) / len(chunk), 6)])
    return out

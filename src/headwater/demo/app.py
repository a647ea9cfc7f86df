"""``headwater demo``: start the stack, run the walk-through, keep the changes flowing.

Order: reset the data dir → operational databases seeded → Headwater (sources, workers,
API) caught up with them → change simulator started → walk-through → (unless
``once``) run until Ctrl-C or SIGTERM → simulator, Headwater and both PostgreSQL
servers stopped, whatever happened before.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console

from headwater.demo.simulator import ChangeSimulator
from headwater.demo.stack import DemoStack
from headwater.demo.walkthrough import Walkthrough, WalkthroughResult

_STATS_EVERY_S = 15.0


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path(".headwater-demo")
    port: int = 8765
    rate: float = 2.0
    """Simulated changes per second; 0 turns the simulator off."""
    once: bool = False
    """Stop after the walk-through (its failure raises DemoError)."""


def run(options: DemoOptions, console: Console) -> WalkthroughResult:
    """Run the demo; returns what the walk-through measured.

    SIGTERM is handled like Ctrl-C: everything started is stopped before returning.
    Ctrl-C after the walk-through ends the demo normally.

    Raises:
        ConfigError: a bad option (rate, port taken, a data dir that is not the demo's).
        DemoError: the stack did not become ready, or the walk-through failed.
        KeyboardInterrupt: interrupted before the walk-through finished.
    """
    started = process_started()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(options, console, started)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(options: DemoOptions, console: Console, started: float) -> WalkthroughResult:
    console.rule("[bold]Headwater demo: a travel assistant that stays fresh")
    with DemoStack(options.data_dir, port=options.port) as stack:
        stack.start(lambda line: console.print(f"[dim]•[/dim] {line}"))
        console.print(
            f"\n[bold]Dashboard:[/bold] [link={stack.url}/]{stack.url}/[/link]"
            f"   [bold]API:[/bold] {stack.url}/docs"
            f"   [bold]config:[/bold] {stack.paths.config}"
        )
        sim = None
        if options.rate > 0:
            sim = ChangeSimulator(
                stack.airline_dsn, stack.loyalty_dsn, stack.paths.policies, rate=options.rate
            )
            sim.start()
            console.print(
                f"[dim]•[/dim] change simulator: {options.rate:g} changes/s (prices, delays,"
                " bookings, hotel rooms, loyalty points, policy edits)"
            )
        try:
            result = Walkthrough(stack.url, stack.airline_dsn, stack.paths.policies, console).run()
            _summary(console, result, started)
            if not options.once:
                _keep_running(console, stack, sim)
        finally:
            stack.stop_watching()
            if sim is not None:
                sim.stop()
            console.print("[dim]stopping the simulator, Headwater and PostgreSQL…[/dim]")
    console.print("stopped")
    return result


def _summary(console: Console, result: WalkthroughResult, started: float) -> None:
    console.print()
    console.rule("[bold]Figures")
    if result.first_answer_at is not None:
        console.print(f"first answer {result.first_answer_at - started:.1f}s after start")
    if result.delay_commit_to_answer_ms is not None:
        console.print(
            f"flight delay: source commit → answer {result.delay_commit_to_answer_ms:.0f} ms"
        )
    if result.policy_save_to_answer_ms is not None:
        ms = result.policy_save_to_answer_ms
        console.print(f"policy edit: file saved → answer {ms:.0f} ms")


def _keep_running(console: Console, stack: DemoStack, sim: ChangeSimulator | None) -> None:
    console.print(
        f"\nHeadwater keeps running: ask at {stack.url}/docs or with"
        f" [bold]headwater ask --config {stack.paths.config}[/bold]. Ctrl-C to stop."
    )
    try:
        while True:
            time.sleep(_STATS_EVERY_S)
            if sim is not None:
                kinds = ", ".join(f"{k} {n}" for k, n in sorted(sim.counts.items()))
                errors = f", {sim.errors} failed" if sim.errors else ""
                console.print(
                    f"[dim]simulated {sum(sim.counts.values())} changes ({kinds}){errors}"
                )
    except KeyboardInterrupt:
        console.print()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def process_started() -> float:
    """``time.monotonic()`` at the moment this process started (from /proc; now
    where /proc is missing), so figures include the interpreter's start-up."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return time.monotonic() - max(0.0, age)
    except (OSError, ValueError, IndexError):
        return time.monotonic()

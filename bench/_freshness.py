"""Freshness probes: time from a file write to that file being the top search hit.

One loop for every system, so each is measured the same way: write a new file holding
a unique fact, then every 10 ms ask the system's index for the top hit of a question
about that fact (query embedding included) until it is the new file. Probe 0 warms up
and is not counted. After each probe the file is deleted and its removal from the
index awaited, so probes never overlap.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Freshness:
    system: str
    latencies_s: list[float]
    note: str = ""

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_s)

    @property
    def p99(self) -> float:
        lat = sorted(self.latencies_s)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def probe_text(i: int) -> tuple[str, str, str]:
    """(file name, file content, query) of probe ``i``: identical for every system."""
    code = f"zq{i:03d}x{random.Random(i).randint(1000, 9999)}"
    content = f"The canteen on floor {i} serves lentil soup on Tuesdays (notice {code}).\n"
    query = f"what does the canteen on floor {i} serve, notice {code}"
    return f"probe-{i:03d}.txt", content, query


def measure(
    system: str,
    folder: Path,
    probes: int,
    top_file: Callable[[str], str | None],
    has_file: Callable[[str], bool],
    context: Callable[[], str] = lambda: "",
    timeout_s: float = 60,
) -> Freshness:
    """Latencies of ``probes`` probes; ``top_file(query)`` is the system's top hit."""
    lat: list[float] = []
    for i in range(probes + 1):
        name, content, query = probe_text(i)
        t0 = time.perf_counter()
        (folder / name).write_text(content)
        deadline = t0 + (3 * timeout_s if i == 0 else timeout_s)
        while (top := top_file(query)) != name:
            if time.perf_counter() > deadline:
                raise TimeoutError(
                    f"{system}: probe {i} never became the top hit (top: {top})\n{context()}"
                )
            time.sleep(0.01)
        if i:
            lat.append(time.perf_counter() - t0)
        (folder / name).unlink()
        while has_file(name):
            if time.perf_counter() > deadline + timeout_s:
                raise TimeoutError(f"{system}: probe {i} was never removed\n{context()}")
            time.sleep(0.05)
    return Freshness(system, lat)


def print_table(results: list[Freshness], failed: dict[str, str]) -> None:
    """system, p50, p99, probes; then Headwater's p50 over the fastest peer's."""
    print(f"  {'system':<12} {'p50':>9} {'p99':>9} {'probes':>7}  note")
    for r in results:
        print(
            f"  {r.system:<12} {r.p50 * 1000:>6.0f} ms {r.p99 * 1000:>6.0f} ms"
            f" {len(r.latencies_s):>7}  {r.note}"
        )
    for name, why in failed.items():
        print(f"  {name:<12} {'—':>9} {'—':>9} {0:>7}  not measured: {why}")
    ours = next((r for r in results if r.system == "headwater"), None)
    peers = [r for r in results if r.system != "headwater"]
    if ours and peers:
        best = min(peers, key=lambda r: r.p50)
        print(
            f"  headwater p50 / fastest peer p50 ({best.system}): {ours.p50 / best.p50:.2f}"
            " (target ≤ 1.00; and headwater p50 ≤ 1 s)"
        )

"""The scripted walk-through: a customer talks to the travel assistant while the
sources change under it.

Steps, each a real ``POST /v1/ask`` with ``consistency: "fresh"`` (the answer waits
until the knowledge base and profiles reflect every write committed before the call):

1. The customer, known by her CRM email, asks about her loyalty status: the answer
   comes from the loyalty database, linked to her by identity resolution (another
   email, another spelling of her name, the same phone written differently).
2. She asks for the status of her flight: on time.
3. Operations delay the flight at the source (an ``UPDATE`` in the airline database).
4. She asks again: the answer states the delay. The time from the source commit to
   the answer is measured.
5. She asks about cabin bags; the policy team edits ``baggage.md``; the next answer
   quotes and cites the new version. The time from the file save to the answer is
   measured.

Every step checks its answer; a wrong one raises :class:`~headwater.errors.DemoError`
naming the step, so ``headwater demo --once`` doubles as an end-to-end check.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from headwater.demo.data import FEATURED
from headwater.errors import DemoError
from headwater.storage.database import connect

DELAY_MINUTES = 95
EXPECTED_TIME = "11:15"
DELAY_REMARK = "Late arrival of the inbound aircraft."
CABIN_OLD = "one cabin bag of up to 8 kg"
CABIN_NEW = "one cabin bag of up to 10 kg"
_FLIGHT_NO = re.compile(r"\bHW\d{3}\b")


@dataclass(frozen=True)
class Answer:
    """One answer of the API, with how long the call took as the client saw it."""

    question: str
    text: str
    citations: list[dict[str, Any]]
    profile_fields: dict[str, str]
    cache: str
    stale: bool
    timings_ms: dict[str, float]
    client_ms: float


@dataclass
class WalkthroughResult:
    """What the walk-through saw (the figures the demo reports)."""

    answers: list[Answer] = field(default_factory=list)
    first_answer_at: float | None = None
    """``time.monotonic()`` when the first answer arrived."""
    delay_commit_to_answer_ms: float | None = None
    """Source commit of the flight delay → the answer that states it."""
    policy_save_to_answer_ms: float | None = None
    """The policy file saved → the answer that cites its new version."""


def ask(url: str, question: str, customer_id: str, *, timeout_s: float = 60.0) -> Answer:
    """``POST /v1/ask`` with ``consistency: "fresh"``.

    Raises:
        DemoError: the server answered with an error or could not be reached.
    """
    body = json.dumps(
        {"question": question, "customer_id": customer_id, "consistency": "fresh"}
    ).encode()
    req = urllib.request.Request(
        f"{url}/v1/ask", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            data = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise DemoError(f"POST /v1/ask answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise DemoError(f"POST /v1/ask failed: {exc}") from None
    return Answer(
        question=question,
        text=data["answer"],
        citations=data["citations"],
        profile_fields=data["profile_fields"],
        cache=data["cache"],
        stale=bool(data.get("stale", False)),
        timings_ms=data["timings_ms"],
        client_ms=(time.perf_counter() - t0) * 1000,
    )


def profile_records(url: str, identifier: str) -> list[str]:
    """The source records merged into the profile of ``identifier`` (empty if none)."""
    q = urllib.parse.quote(identifier)
    try:
        with urllib.request.urlopen(f"{url}/v1/profiles?identifier={q}", timeout=10) as r:
            return list(json.loads(r.read())["profile"].get("records", []))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise DemoError(f"GET /v1/profiles answered {exc.code}") from None
    except OSError as exc:
        raise DemoError(f"GET /v1/profiles failed: {exc}") from None


class Walkthrough:
    """Runs the steps against a started stack (its API ``url``, the airline database,
    the policies folder), printing them to ``console``."""

    def __init__(self, url: str, airline_dsn: str, policies: Path, console: Console) -> None:
        self.url, self.airline_dsn, self.policies = url, airline_dsn, policies
        self.console = console
        self.result = WalkthroughResult()

    def run(self) -> WalkthroughResult:
        """All steps in order.

        Raises:
            DemoError: a step got a wrong answer (the message names the step).
        """
        self.loyalty_status()
        self.flight_delay()
        self.policy_edit()
        return self.result

    # -- steps ----------------------------------------------------------------------

    def loyalty_status(self) -> None:
        f = FEATURED
        self._title(
            "1. Who is asking?",
            f"{f.first_name} {f.last_name} signs in with her CRM email {f.email}.",
        )
        a = self._ask("What is my loyalty tier and how many points do I have?", f.email)
        if f.tier not in a.text or str(f.points) not in a.text:
            raise DemoError(
                f"step 1: the answer lacks the loyalty tier {f.tier} and points {f.points}"
                f" from the loyalty database: {a.text!r}"
            )
        records = profile_records(self.url, f.email)
        member = f"loyalty:members:{f.loyalty_no}"
        if member not in records:
            raise DemoError(f"step 1: her profile does not include {member}: {records}")
        self.console.print(
            Text.assemble(
                ("  one profile from ", "dim"),
                (", ".join(records), "cyan"),
                ("\n  linked on her phone number, written differently in each system", "dim"),
            )
        )

    def flight_delay(self) -> None:
        f = FEATURED
        question = f"What is the status of my flight {f.flight_no}?"
        self._title("2. Before", f"She checks her flight {f.flight_no} to Lisbon.")
        before = self._ask(question, f.loyalty_no)
        self._check_flight(before, "on time", step=2)
        self._title(
            "3. At the source",
            f"Operations delay {f.flight_no} by {DELAY_MINUTES} minutes in the airline"
            " database (UPDATE flights ...; COMMIT).",
        )
        with connect(self.airline_dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE flights SET status = 'delayed', delay_minutes = %s,"
                " expected_time = %s, remark = %s WHERE flight_no = %s",
                (DELAY_MINUTES, EXPECTED_TIME, DELAY_REMARK, f.flight_no),
            )
            committed = time.perf_counter()
        self._title("4. After", "She asks again.")
        after = self._ask(question, f.loyalty_no)
        delay_ms = (time.perf_counter() - committed) * 1000
        self._check_flight(after, f"{DELAY_MINUTES} minutes late", step=4)
        self.result.delay_commit_to_answer_ms = delay_ms
        self._figure("source commit → answer", delay_ms, after)

    def policy_edit(self) -> None:
        f = FEATURED
        question = "How heavy can my cabin bag be?"
        self._title("5. A policy changes", "She asks about cabin bags.")
        before = self._ask(question, f.loyalty_no)
        if "8 kg" not in before.text:
            raise DemoError(f"step 5: the answer does not quote the 8 kg rule: {before.text!r}")
        old_version = self._cited_version(before, "baggage.md", step=5)
        path = self.policies / "baggage.md"
        text = path.read_text(encoding="utf-8")
        if CABIN_OLD not in text:
            raise DemoError(f"step 5: {path} no longer says {CABIN_OLD!r}; it was edited")
        self.console.print(
            f"  [dim]The policy team raises the limit in {path.name}: "
            f"[/dim][red]{CABIN_OLD}[/red] → [green]{CABIN_NEW}[/green]"
        )
        path.write_text(text.replace(CABIN_OLD, CABIN_NEW), encoding="utf-8")
        saved = time.perf_counter()
        after = self._ask(question, f.loyalty_no)
        ms = (time.perf_counter() - saved) * 1000
        if "10 kg" not in after.text:
            raise DemoError(f"step 5: the answer after the edit lacks 10 kg: {after.text!r}")
        new_version = self._cited_version(after, "baggage.md", step=5)
        if new_version <= old_version:
            raise DemoError(
                f"step 5: baggage.md is cited at version {new_version}, not newer than"
                f" {old_version}"
            )
        self.result.policy_save_to_answer_ms = ms
        self._figure(f"file saved → answer citing baggage.md v{new_version}", ms, after)

    # -- helpers ----------------------------------------------------------------------

    def _ask(self, question: str, customer_id: str) -> Answer:
        self.console.print(Text.assemble(("  Q ", "bold"), (question, "bold cyan")))
        a = ask(self.url, question, customer_id)
        if self.result.first_answer_at is None:
            self.result.first_answer_at = time.monotonic()
        self.result.answers.append(a)
        cites = ", ".join(f"[{i}] {c['doc_id']} v{c['version']}" for i, c in _numbered(a))
        self.console.print(
            Panel(
                Text(" ".join(a.text.split())),
                title="answer",
                title_align="left",
                subtitle=f"cache {a.cache} · {a.client_ms:.0f} ms",
                subtitle_align="right",
                border_style="green",
            )
        )
        if cites:
            self.console.print(f"  [dim]cites {cites}[/dim]")
        if a.stale:
            raise DemoError(f"the answer to {question!r} is stale: the stores did not catch up")
        return a

    def _check_flight(self, a: Answer, expected: str, *, step: int) -> None:
        f = FEATURED
        if expected not in a.text or f.flight_no not in a.text:
            raise DemoError(
                f"step {step}: the answer should say {f.flight_no} is {expected!r}: {a.text!r}"
            )
        others = sorted(set(_FLIGHT_NO.findall(a.text)) - {f.flight_no})
        if others:
            raise DemoError(f"step {step}: the answer quotes other flights {others}: {a.text!r}")

    @staticmethod
    def _cited_version(a: Answer, name: str, *, step: int) -> int:
        versions = [int(c["version"]) for c in a.citations if c["doc_id"].endswith(name)]
        if not versions:
            raise DemoError(f"step {step}: the answer does not cite {name}: {a.citations}")
        return max(versions)

    def _title(self, title: str, what: str) -> None:
        self.console.print()
        self.console.print(Text.assemble((title, "bold magenta"), ("  ", ""), (what, "")))

    def _figure(self, what: str, ms: float, a: Answer) -> None:
        steps = " · ".join(
            f"{k} {v:.0f}" for k, v in a.timings_ms.items() if k != "total" and v >= 1
        )
        self.console.print(
            Text.assemble(
                ("  ⏱  ", ""),
                (f"{what}: {ms:.0f} ms", "bold yellow"),
                (f"  (server, ms: {steps})", "dim"),
            )
        )


def _numbered(a: Answer) -> list[tuple[int, dict[str, Any]]]:
    """Citations with the ``[n]`` the answer text uses for them (order of first use)."""
    marks = [int(m) for m in re.findall(r"\[(\d+)\]", a.text)]
    ordered = list(dict.fromkeys(marks))
    return list(zip(ordered, a.citations, strict=False))

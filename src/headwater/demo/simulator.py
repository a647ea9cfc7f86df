"""A background stream of business changes against the demo's sources.

Kinds of change, drawn at random with these weights:

- ``price`` (35): a fare goes up or down by up to 12 %;
- ``delay`` (15): a flight is delayed, gets a new gate, or is back on time;
- ``booking`` (20): a new booking, by a CRM customer or by a guest (a new person);
- ``inventory`` (15): a partner hotel's rooms available tonight change;
- ``points`` (13): a loyalty member earns points (the loyalty database);
- ``policy`` (2): the policy team edits the meal-voucher amount in ``hotel.md``.

Changes are spread evenly at ``rate`` per second. The featured customer and flight of
the walk-through (:data:`~headwater.demo.data.FEATURED`) and ``baggage.md`` are never
touched, so the walk-through's answers stay predictable while the rest moves.

Each change is one committed transaction; a change that fails (a database restarting)
is counted in ``errors`` and the simulator goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from headwater.demo.data import CABINS, FEATURED, booking_ref
from headwater.errors import ConfigError
from headwater.storage.database import connect

log = logging.getLogger(__name__)

KINDS: dict[str, int] = {
    "price": 35,
    "delay": 15,
    "booking": 20,
    "inventory": 15,
    "points": 13,
    "policy": 2,
}
MAX_RATE = 200.0
_VOUCHER = re.compile(r"worth up to EUR (\d+) per passenger")
_FIRST = ("Maya", "Theo", "Nora", "Felix", "Alma", "Jonah", "Ivy", "Milo", "Elsa", "Otto")
_LAST = ("Berg", "Quinn", "Vidal", "Okafor", "Lindqvist", "Haddad", "Moreno", "Sato")


class ChangeSimulator:
    """Writes random changes at ``rate`` per second in a background thread.

    Guarantees: :meth:`stop` returns once the thread has ended (bounded by one change);
    ``counts`` says how many changes of each kind were committed.
    """

    def __init__(
        self,
        airline_dsn: str,
        loyalty_dsn: str,
        policies: Path,
        *,
        rate: float,
        seed: int | None = None,
    ) -> None:
        """Raises ConfigError: ``rate`` is not in (0, MAX_RATE]."""
        if not 0 < rate <= MAX_RATE:
            raise ConfigError(f"--rate {rate}: expected changes per second in (0, {MAX_RATE:g}]")
        self.airline_dsn, self.loyalty_dsn, self.policies = airline_dsn, loyalty_dsn, policies
        self.rate = rate
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-simulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        airline = loyalty = None
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        try:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at += interval
                kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
                try:
                    if kind == "points":
                        loyalty = loyalty or connect(self.loyalty_dsn, autocommit=True)
                        self._points(loyalty)
                    elif kind == "policy":
                        self._policy()
                    else:
                        airline = airline or connect(self.airline_dsn, autocommit=True)
                        getattr(self, f"_{kind}")(airline)
                    self.counts[kind] += 1
                except Exception as exc:  # a change failing must not end the stream
                    self.errors += 1
                    log.warning("simulator: %s change failed: %s", kind, exc)
                    for c in (airline, loyalty):
                        if c is not None:
                            c.close()
                    airline = loyalty = None
                    next_at = max(next_at, time.monotonic() + 1.0)  # back off a second
        finally:
            for c in (airline, loyalty):
                if c is not None:
                    c.close()

    # -- changes ----------------------------------------------------------------------

    def _price(self, conn: Any) -> None:
        factor = 1 + self.rng.uniform(-0.12, 0.12)
        conn.execute(
            "UPDATE prices SET price = round(price * %s::numeric, 2), updated_at = now()"
            " WHERE (flight_no, cabin) = (SELECT flight_no, cabin FROM prices"
            "  WHERE flight_no <> %s ORDER BY random() LIMIT 1)",
            (f"{factor:.4f}", FEATURED.flight_no),
        )

    def _delay(self, conn: Any) -> None:
        row = conn.execute(
            "SELECT flight_no, scheduled_time FROM flights WHERE flight_no <> %s"
            " ORDER BY random() LIMIT 1",
            (FEATURED.flight_no,),
        ).fetchone()
        if row is None:
            return
        flight_no, scheduled = row
        roll = self.rng.random()
        if roll < 0.5:
            minutes = self.rng.choice((15, 25, 40, 55, 80, 120, 190))
            reason = self.rng.choice(
                (
                    "Late arrival of the inbound aircraft.",
                    "Air traffic control restrictions.",
                    "Weather at the destination.",
                    "Technical check of the aircraft.",
                )
            )
            conn.execute(
                "UPDATE flights SET status = 'delayed', delay_minutes = %s,"
                " expected_time = %s, remark = %s WHERE flight_no = %s",
                (minutes, _plus(scheduled, minutes), reason, flight_no),
            )
        elif roll < 0.8:
            gate = f"{self.rng.choice('ABCD')}{self.rng.randrange(1, 40)}"
            conn.execute(
                "UPDATE flights SET gate = %s, remark = %s WHERE flight_no = %s",
                (gate, f"Gate changed to {gate}.", flight_no),
            )
        else:
            conn.execute(
                "UPDATE flights SET status = 'on time', delay_minutes = 0,"
                " expected_time = scheduled_time, remark = '' WHERE flight_no = %s",
                (flight_no,),
            )

    def _booking(self, conn: Any) -> None:
        flight = conn.execute(
            "SELECT flight_no, flight_date FROM flights WHERE flight_no <> %s"
            " ORDER BY random() LIMIT 1",
            (FEATURED.flight_no,),
        ).fetchone()
        if flight is None:
            return
        cabin = self.rng.choices(list(CABINS), weights=(8, 2, 1))[0]
        amount = round(self.rng.uniform(60, 180) * CABINS[cabin], 2)
        ref = booking_ref(self.rng)
        if self.rng.random() < 0.7:
            conn.execute(
                "INSERT INTO bookings (booking_ref, customer_id, holder_first_name,"
                " holder_last_name, contact_email, contact_phone, flight_no, travel_date,"
                " cabin, amount) SELECT %s, customer_id, first_name, last_name, email, phone,"
                " %s, %s, %s, %s FROM customers WHERE customer_id <> %s"
                " ORDER BY random() LIMIT 1 ON CONFLICT (booking_ref) DO NOTHING",
                (ref, flight[0], flight[1], cabin, amount, FEATURED.customer_id),
            )
            return
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        email = f"{first.lower()}.{last.lower()}{self.rng.randrange(10_000)}@guest.example"
        conn.execute(
            "INSERT INTO bookings (booking_ref, holder_first_name, holder_last_name,"
            " contact_email, flight_no, travel_date, cabin, amount)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (booking_ref) DO NOTHING",
            (ref, first, last, email, flight[0], flight[1], cabin, amount),
        )

    def _inventory(self, conn: Any) -> None:
        conn.execute(
            "UPDATE hotels SET rooms_available = greatest(0, rooms_available + %s)"
            " WHERE hotel_id = (SELECT hotel_id FROM hotels ORDER BY random() LIMIT 1)",
            (self.rng.choice((-3, -2, -1, -1, 1, 2, 4)),),
        )

    def _points(self, conn: Any) -> None:
        conn.execute(
            "UPDATE members SET points = points + %s WHERE member_no = (SELECT member_no"
            " FROM members WHERE member_no <> %s ORDER BY random() LIMIT 1)",
            (self.rng.randrange(100, 3000), FEATURED.loyalty_no),
        )

    def _policy(self) -> None:
        path = self.policies / "hotel.md"
        text = path.read_text(encoding="utf-8")
        amount = self.rng.choice((12, 15, 18, 20, 25))
        new = _VOUCHER.sub(f"worth up to EUR {amount} per passenger", text, count=1)
        if new != text:
            path.write_text(new, encoding="utf-8")


def _plus(hhmm: str, minutes: int) -> str:
    """``"09:40"`` plus ``minutes``, as ``HH:MM`` (wrapping past midnight)."""
    t = dt.datetime.strptime(hhmm, "%H:%M") + dt.timedelta(minutes=minutes)
    return t.strftime("%H:%M")

"""The demo's operational data: an airline's reservations database and a separate
loyalty-programme database, their schemas and a deterministic seed.

``airline`` (the reservations system): ``customers`` (the CRM), ``bookings`` (each with
its holder's name and contact details, as typed at booking time), ``flights`` (status,
delay, gate, as the operations system shows them), ``hotels`` (partner hotels and their
room inventory) and ``prices`` (fares per flight and cabin).

``loyalty`` (another system, another team): ``members``. Most members are also CRM
customers, written differently: a middle name or a short first name, another email
address, a phone number without its country code. Identity resolution has to find them.

Dates are relative to the day of the seed, so the demo's flights are always upcoming.
The seed is a pure function of that day: two runs on one day write the same rows.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from headwater.errors import DemoError
from headwater.storage.database import connect

AIRLINE_SCHEMA = """
CREATE TABLE customers (
    customer_id   integer PRIMARY KEY,
    first_name    text NOT NULL,
    last_name     text NOT NULL,
    email         text,
    phone         text,
    date_of_birth date,
    home_airport  text
);
CREATE TABLE flights (
    flight_no        text PRIMARY KEY,
    origin           text NOT NULL,
    origin_city      text NOT NULL,
    destination      text NOT NULL,
    destination_city text NOT NULL,
    flight_date      date NOT NULL,
    scheduled_time   text NOT NULL,
    expected_time    text NOT NULL,
    status           text NOT NULL DEFAULT 'on time',
    delay_minutes    integer NOT NULL DEFAULT 0,
    gate             text NOT NULL,
    remark           text NOT NULL DEFAULT ''
);
CREATE TABLE bookings (
    booking_ref       text PRIMARY KEY,
    customer_id       integer REFERENCES customers,
    holder_first_name text NOT NULL,
    holder_last_name  text NOT NULL,
    contact_email     text,
    contact_phone     text,
    flight_no         text NOT NULL REFERENCES flights,
    travel_date       date NOT NULL,
    cabin             text NOT NULL,
    amount            numeric(10, 2) NOT NULL,
    currency          text NOT NULL DEFAULT 'EUR',
    status            text NOT NULL DEFAULT 'confirmed',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE hotels (
    hotel_id        integer PRIMARY KEY,
    name            text NOT NULL,
    city            text NOT NULL,
    airport         text NOT NULL,
    distance_km     numeric(4, 1) NOT NULL,
    rooms_available integer NOT NULL,
    nightly_rate    numeric(8, 2) NOT NULL,
    currency        text NOT NULL DEFAULT 'EUR'
);
CREATE TABLE prices (
    flight_no  text NOT NULL REFERENCES flights,
    cabin      text NOT NULL,
    price      numeric(10, 2) NOT NULL,
    currency   text NOT NULL DEFAULT 'EUR',
    seats_left integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flight_no, cabin)
);
"""

LOYALTY_SCHEMA = """
CREATE TABLE members (
    member_no   text PRIMARY KEY,
    given_name  text NOT NULL,
    family_name text NOT NULL,
    email       text,
    mobile      text,
    birth_date  date,
    tier        text NOT NULL,
    points      integer NOT NULL,
    joined_on   date NOT NULL
);
"""

AIRPORTS = {
    "LHR": "London Heathrow",
    "LIS": "Lisbon",
    "MAD": "Madrid",
    "CDG": "Paris Charles de Gaulle",
    "AMS": "Amsterdam",
    "FCO": "Rome Fiumicino",
    "BER": "Berlin",
    "DUB": "Dublin",
    "ATH": "Athens",
    "CPH": "Copenhagen",
}
CABINS = {"economy": 1.0, "premium": 1.7, "business": 3.2}
TIERS = ("Blue", "Silver", "Gold", "Platinum")

_FIRST = """Olivia Liam Emma Noah Amelia Oliver Sophia Elijah Isabella Lucas Mia Mateo Chloe
Hugo Lea Jonas Sofia Marco Giulia Pierre Camille Nikos Eleni Sean Aoife Lars Freja Tomas
Ines Rafael Beatriz Daniel Hannah Samuel Grace Leo Clara Adam Zoe Oscar""".split()  # noqa: SIM905
_LAST = """Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Wright Garcia
Martinez Lopez Silva Santos Ferreira Costa Rossi Russo Bianchi Dubois Laurent Bernard
Papadopoulos Nielsen Jensen Murphy Kelly Schmidt Muller Fischer Novak Horvat Kowalski
Andersen Moreau Romano Oliveira""".split()  # noqa: SIM905
_NICK = {"Daniel": "Dan", "Samuel": "Sam", "Thomas": "Tom", "Rafael": "Rafa", "Olivia": "Liv"}
_HOTELS = (
    ("Lisbon Airport Lodge", "Lisbon", "LIS", 0.8, 129),
    ("Tagus Riverside Hotel", "Lisbon", "LIS", 7.5, 164),
    ("Heathrow Gateway Inn", "London", "LHR", 1.2, 149),
    ("Bath Road Suites", "London", "LHR", 2.4, 138),
    ("Barajas Terminal Hotel", "Madrid", "MAD", 0.5, 118),
    ("Roissy Runway Hotel", "Paris", "CDG", 1.0, 142),
    ("Schiphol Plaza Rooms", "Amsterdam", "AMS", 0.3, 156),
    ("Fiumicino Harbour Hotel", "Rome", "FCO", 3.1, 112),
    ("BER Airport Hotel", "Berlin", "BER", 0.4, 109),
    ("Dublin Airside Hotel", "Dublin", "DUB", 1.5, 131),
    ("Athens Coast Airport Hotel", "Athens", "ATH", 4.0, 98),
    ("Kastrup Bay Hotel", "Copenhagen", "CPH", 1.1, 151),
)


@dataclass(frozen=True)
class Featured:
    """The customer and flight of the scripted walk-through (see :func:`seed`)."""

    customer_id: int = 1001
    first_name: str = "Ana"
    last_name: str = "Souza"
    email: str = "ana.souza@example.com"
    crm_phone: str = "+44 7700 900123"
    loyalty_no: str = "HWL-100234"
    loyalty_name: str = "Ana Maria"
    loyalty_email: str = "anasouza.travels@example.net"
    loyalty_phone: str = "07700 900123"
    tier: str = "Gold"
    points: int = 48210
    booking_ref: str = "HWX7Q2"
    flight_no: str = "HW214"
    origin: str = "LHR"
    destination: str = "LIS"
    scheduled_time: str = "09:40"
    gate: str = "B32"


FEATURED = Featured()


@dataclass(frozen=True)
class SeedCounts:
    customers: int
    members: int
    flights: int
    bookings: int
    hotels: int
    prices: int


def seed(airline_dsn: str, loyalty_dsn: str, *, today: dt.date | None = None) -> SeedCounts:
    """Create the schemas and rows in the two (empty) databases.

    Raises:
        DemoError: a database already holds the demo's tables (reset the data dir).
        StorageError: a database cannot be reached.
    """
    day = today or dt.date.today()
    rng = random.Random(day.toordinal())
    customers = _customers(rng)
    members = _members(rng, customers)
    flights = _flights(rng, day)
    bookings = _bookings(rng, customers, flights, day)
    prices = [
        (f[0], cabin, round(rng.uniform(60, 180) * factor, 2), rng.randrange(4, 60))
        for f in flights
        for cabin, factor in CABINS.items()
    ]
    hotels = [
        (i + 1, name, city, ap, km, rng.randrange(3, 40), rate)
        for i, (name, city, ap, km, rate) in enumerate(_HOTELS)
    ]
    with connect(airline_dsn) as conn:
        if conn.execute("SELECT to_regclass('public.flights')").fetchone() != (None,):
            raise DemoError("the demo's airline database is not empty; reset the data dir")
        conn.execute(AIRLINE_SCHEMA)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s,%s,%s,%s,%s,%s,%s)", customers)
            cur.executemany(
                "INSERT INTO flights (flight_no, origin, origin_city, destination,"
                " destination_city, flight_date, scheduled_time, expected_time, gate)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                flights,
            )
            cur.executemany(
                "INSERT INTO bookings (booking_ref, customer_id, holder_first_name,"
                " holder_last_name, contact_email, contact_phone, flight_no, travel_date,"
                " cabin, amount) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                bookings,
            )
            cur.executemany(
                "INSERT INTO hotels (hotel_id, name, city, airport, distance_km,"
                " rooms_available, nightly_rate) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                hotels,
            )
            cur.executemany(
                "INSERT INTO prices (flight_no, cabin, price, seats_left) VALUES (%s,%s,%s,%s)",
                prices,
            )
    with connect(loyalty_dsn) as conn:
        conn.execute(LOYALTY_SCHEMA)
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO members VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)", members)
    return SeedCounts(
        len(customers), len(members), len(flights), len(bookings), len(hotels), len(prices)
    )


Row = tuple[object, ...]


def _email(first: str, last: str, n: int, domain: str = "example.com") -> str:
    return f"{first.lower()}.{last.lower()}{n}@{domain}"


def _customers(rng: random.Random) -> list[Row]:
    f = FEATURED
    rows: list[Row] = [
        (
            f.customer_id,
            f.first_name,
            f.last_name,
            f.email,
            f.crm_phone,
            dt.date(1988, 4, 12),
            f.origin,
        )
    ]
    for i in range(119):
        cid = 1002 + i
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        dob = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 20_000))
        phone = f"+44 7911 {cid:06d}"  # unique: a shared phone would be one person
        email = _email(first, last, cid)
        rows.append((cid, first, last, email, phone, dob, rng.choice(list(AIRPORTS))))
    return rows


def _members(rng: random.Random, customers: list[Row]) -> list[Row]:
    """Loyalty members: 80 of the CRM customers, recorded differently, and 20 others."""
    f = FEATURED
    rows: list[Row] = [
        (
            f.loyalty_no,
            f.loyalty_name,
            f.last_name,
            f.loyalty_email,
            f.loyalty_phone,
            dt.date(1988, 4, 12),
            f.tier,
            f.points,
            dt.date(2017, 6, 3),
        )
    ]
    for n, c in enumerate(customers[1:80]):
        _, first, last, email, phone, dob, _ = c
        variant = n % 4
        given = str(first)
        if variant == 0:  # another address, the same phone written nationally
            email = f"{str(first)[0].lower()}{str(last).lower()}@mail.example.org"
            phone = "0" + str(phone).removeprefix("+44 ")
        elif variant == 1:  # the same email in capitals, a short first name
            email = str(email).upper()
            given = _NICK.get(given, given)
        elif variant == 2:  # neither email nor phone: names and birth date only
            email, phone = None, None
        rows.append(_member(rng, 100_300 + n, given, str(last), email, phone, dob))
    for n in range(20):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        dob = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 20_000))
        email = _email(first, last, 900 + n, "mail.example.org")
        rows.append(_member(rng, 100_500 + n, first, last, email, None, dob))
    return rows


def _member(
    rng: random.Random,
    no: int,
    given: str,
    family: str,
    email: object,
    phone: object,
    dob: object,
) -> Row:
    tier = rng.choices(TIERS, weights=(6, 3, 2, 1))[0]
    joined = dt.date(2012, 1, 1) + dt.timedelta(days=rng.randrange(0, 4000))
    return (f"HWL-{no}", given, family, email, phone, dob, tier, rng.randrange(0, 90_000), joined)


def _flights(rng: random.Random, day: dt.date) -> list[Row]:
    f = FEATURED
    rows: list[Row] = [
        (
            f.flight_no,
            f.origin,
            AIRPORTS[f.origin],
            f.destination,
            AIRPORTS[f.destination],
            day + dt.timedelta(days=1),
            f.scheduled_time,
            f.scheduled_time,
            f.gate,
        )
    ]
    codes = list(AIRPORTS)
    used = {f.flight_no}
    while len(rows) < 36:
        no = f"HW{rng.randrange(100, 999)}"
        if no in used:
            continue
        used.add(no)
        origin, dest = rng.sample(codes, 2)
        hhmm = f"{rng.randrange(6, 22):02d}:{rng.choice((0, 10, 20, 30, 40, 50)):02d}"
        gate = f"{rng.choice('ABCD')}{rng.randrange(1, 40)}"
        date = day + dt.timedelta(days=rng.randrange(0, 4))
        rows.append((no, origin, AIRPORTS[origin], dest, AIRPORTS[dest], date, hhmm, hhmm, gate))
    return rows


def booking_ref(rng: random.Random) -> str:
    """A six-character booking reference like ``HWX7Q2``."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "HW" + "".join(rng.choice(alphabet) for _ in range(4))


def _bookings(
    rng: random.Random, customers: list[Row], flights: list[Row], day: dt.date
) -> list[Row]:
    f = FEATURED
    rows: list[Row] = [
        (
            f.booking_ref,
            f.customer_id,
            f.first_name,
            f.last_name,
            f.email,
            f.crm_phone,
            f.flight_no,
            day + dt.timedelta(days=1),
            "economy",
            142.0,
        )
    ]
    refs = {f.booking_ref}
    while len(rows) < 200:
        ref = booking_ref(rng)
        if ref in refs:
            continue
        refs.add(ref)
        fl = rng.choice(flights[1:])
        cabin = rng.choices(list(CABINS), weights=(8, 2, 1))[0]
        amount = round(rng.uniform(60, 180) * CABINS[cabin], 2)
        if rng.random() < 0.85:  # a CRM customer, sometimes with another contact email
            c = rng.choice(customers[1:])
            email = c[3] if rng.random() < 0.8 else _email(str(c[1]), str(c[2]), 7, "work.example")
            rows.append((ref, c[0], c[1], c[2], email, c[4], fl[0], fl[5], cabin, amount))
        else:  # a guest booking: the holder is in no other system
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            email = _email(first, last, rng.randrange(1000), "guest.example")
            rows.append((ref, None, first, last, email, None, fl[0], fl[5], cabin, amount))
    return rows

"""``headwater demo``: a travel assistant kept fresh on the embedded default.

- :mod:`.data`: the operational databases (airline reservations, loyalty programme):
  schemas and a deterministic seed;
- ``headwater.toml`` and ``policies/``: the demo's config and policy documents
  (package data);
- :mod:`.stack`: the data dir, the PostgreSQL servers and Headwater, started and stopped;
- :mod:`.simulator`: a background stream of business changes at a configurable rate;
- :mod:`.walkthrough`: the scripted, self-checking conversation;
- :mod:`.app`: the command, putting them together.
"""

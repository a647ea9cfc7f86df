"""Unified customer profiles: an incremental identity graph over captured tables.

- :mod:`~headwater.profiles.normalize`: identifiers (email, E.164 phone, ids) and attributes;
- :mod:`~headwater.profiles.matcher`: blocking, Fellegi-Sunter scoring, EM estimation;
- :mod:`~headwater.profiles.batch`: :func:`resolve`, the matcher on a batch (evaluation);
- :mod:`~headwater.profiles.graph`: the graph in PostgreSQL, updated per batch;
- :mod:`~headwater.profiles.profile`: survivorship, identifiers, fact aggregates;
- :mod:`~headwater.profiles.processor`: the ``profiles`` pipeline processor;
- :mod:`~headwater.profiles.store`: :func:`get_profile` by id, alias or identifier;
- :mod:`~headwater.profiles.train`: re-estimate m/u from the graph and re-score it.
"""

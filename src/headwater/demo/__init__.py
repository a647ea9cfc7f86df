"""``headwater demo``: the system working end to end on the embedded default."""

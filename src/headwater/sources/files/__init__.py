"""File source: a folder's documents as change events (scan, watch, reconcile)."""

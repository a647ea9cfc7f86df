"""Sources: capture changes from operational systems into the log."""

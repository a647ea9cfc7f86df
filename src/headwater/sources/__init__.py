"""Sources: capture changes from operational systems into the log.

Every source states its delivery guarantee and acknowledges its position to the
upstream system only after the events are durable in the log.
"""

"""One pod under supervisord: the glue, the event listeners, readiness, heartbeats, pod-wide
metrics.
"""

"""What the tests share: real Redis servers and tracker processes, a webhook receiver, and
helpers that wait for a condition instead of sleeping.

- ``redis_server``, ``redis_cluster``: redis-server processes (one, a cluster, Sentinel).
- ``processes``: tracker processes (``Role``, ``Pod``) and ``running``, the one context
  manager that starts roles or pods with a receiver and stops them.
- ``receiver``: the webhook endpoint the processes deliver to.
- ``waiting``: ``wait_until`` (raises on timeout) and ``wait_http``.
- ``delivering``: a sweep and a stream reader in-process, as the roles build them.
- ``faults``, ``load``, ``reliability``: the fault tests' events, load and report.
- ``rawhttp``, ``browser``, ``promseries``: raw HTTP, a headless browser, Prometheus series.
"""

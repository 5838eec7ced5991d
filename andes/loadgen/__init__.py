"""Load generation against a served Andes deployment: what Locust and ``andes capacity`` share.

Pure modules (no Locust, no I/O): ``schedule`` (seeded open-loop arrival schedules),
``client`` (request bodies, SSE stream accounting and client-side QoE), ``capacity`` (figures
of one run and the capacity search). With I/O: ``serve_proc`` (start/stop ``serve run``),
``sweep`` (headless Locust runs) and ``report`` (markdown, CSV, PNG). Locust itself is
imported only by ``loadtests/locustfile.py`` and ``loadtests/shapes.py``, because it
monkey-patches the standard library with gevent on import.
"""

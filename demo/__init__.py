"""The one-command demo: the whole system on a local emulated Confluence site.

``python -m demo up`` (``make demo``) starts Kafka and FerretDB, the emulator and the three
consumers, runs a full crawl and an incremental crawl after changing the site, and prints
what reached MongoDB. ``python -m demo down`` (``make demo-down``) stops what ``up``
started. The modules are also used by the end-to-end tests:

- ``demo.processes``: background processes with a pid file and a log file;
- ``demo.lag``: consumer group lag read with the AdminClient, and the wait for lag 0;
- ``demo.changes``: changes to the emulated site through its control API;
- ``demo.summary``: what the stream, relationship and job documents in MongoDB contain.
"""

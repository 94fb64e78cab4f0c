"""Diagnosis of a configuration: what ``darkroom check`` (offline) and ``darkroom doctor``
(live) find, one module per family.

Offline (no network, no device; ``darkroom check``):

- :mod:`.offline`   the aggregator: config, every rule file, and the checks below, as one
                    :class:`~daemon.diagnose.findings.CheckReport` of errors and warnings
- :mod:`.rule_checks`  a rule file's meaning on its data as written (so also for a file that
                    failed validation): step inputs, pick ranges, folders, unknown names
- :mod:`.profiles`  the weights of every profile a rule uses are here (HF cache or a local
                    folder), or its hosted API key is set
- :mod:`.paths`     configured folders exist or can be created; processed/quarantine folders
                    stay out of the sinks; mask and watermark files exist inside the rules
                    folder (or a named reference folder)

Live (``darkroom doctor``, also ``darkroom check --live``), each a
:class:`~daemon.diagnose.findings.Finding` with ok/warn/fail and a fix:

- :mod:`.doctor`    the aggregator
- :mod:`.gpu`       GPU, driver and torch build;  :mod:`.disk` free space of sinks and state
- :mod:`.tools`     external tools the rules need (ffmpeg, Ghostscript)
- :mod:`.s3`        credentials; buckets and prefixes readable (sources) and writable (sinks)
- :mod:`.sqs`       event queues exist and receive their bucket's notifications
- :mod:`.webhooks`  webhook endpoints reachable (and, opt-in, a signed ``doctor.ping``)

boto3, torch and httpx are imported inside the checks that need them, never at import.
"""

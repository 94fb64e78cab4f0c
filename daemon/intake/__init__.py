"""Intake: arrivals from the sources become plans in the ledger.

- :mod:`daemon.intake.intake`     the intake thread: one arrival -> read once -> plans submitted
- :mod:`daemon.intake.facts`      what an arrival's bytes, header and sidecar tell, without
  decoding pixels
- :mod:`daemon.intake.settlement` telling a source when an arrival is fully handled
"""

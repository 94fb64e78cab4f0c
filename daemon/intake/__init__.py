"""Intake: arrivals from the sources become plans in the ledger.

- :mod:`daemon.intake.intake`     the intake thread: arrivals in, decided here or in the
  second process, handed to the writer
- :mod:`daemon.intake.decider`    what one arrival becomes: read once -> facts -> rules -> plans
- :mod:`daemon.intake.decide_process`  the second process a burst is decided in (the main
  process's side: start, chunks, outcomes, death), and :mod:`daemon.intake.decide_child`, its
  entry point
- :mod:`daemon.intake.writer`     the writing thread: every decision ready so far in one
  ledger transaction, then reported
- :mod:`daemon.intake.decisions`  what one arrival was decided to be (plans, ``seen`` rows)
- :mod:`daemon.intake.refusals`   what is recorded for an arrival that is not planned
  (unreadable, too big, unnameable, ignored with each rule's reason)
- :mod:`daemon.intake.facts`      what an arrival's bytes, header and sidecar tell, without
  decoding pixels
- :mod:`daemon.intake.listing`    one folder listing per second for a burst's sidecar probes
- :mod:`daemon.intake.settlement` telling a source when an arrival is fully handled
"""

"""The job queue: the SQLite ledger and the dispatcher that decides which jobs to claim next."""

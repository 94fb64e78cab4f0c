"""Intake: arrivals from the sources become plans in the ledger; settlement tells sources when they are done."""

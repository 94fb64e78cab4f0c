"""What Darkroom writes: decoding and encoding, colour, provenance, sheets, review pages, digests."""

"""The auditor service: chain checks, closing changes, the witness, signed heads and evidence packs."""

"""UPM projections."""

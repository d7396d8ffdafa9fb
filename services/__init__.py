"""UPM services."""

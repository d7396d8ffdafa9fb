"""UPM events."""

"""The gateway service: intents in, reads for people out."""

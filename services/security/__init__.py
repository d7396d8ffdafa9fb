"""Security building blocks: TLS, access rules, credentials, scopes, secret references."""

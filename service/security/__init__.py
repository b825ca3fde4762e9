"""Security building blocks: SMART scopes, keys and JWKS, access tokens, the token endpoint,
discovery and settings. Framework-free except :mod:`service.security.flask_integration`."""

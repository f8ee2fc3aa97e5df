"""Authentication (AUTH_MAD) drivers."""

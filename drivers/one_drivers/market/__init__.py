"""Marketplace (MARKET_MAD) drivers."""

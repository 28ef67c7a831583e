"""Providers' rate limits shared by every replica, kept in PostgreSQL (see service.py for why our own)."""

"""Publicity campaigns (精准宣防) delivered by the bot: see delivery.py."""

"""Emergencies: a loss reported on a task, and its protective payment stop (保护性止付) with the bank."""

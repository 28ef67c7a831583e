"""The supervisor console (GET /console): overview, escalations and breaches, cases, ranking, audit, clues."""

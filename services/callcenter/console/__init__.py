"""The seat operator's console (GET /console on the callcenter): my state, the next task, its card, call, disposition."""

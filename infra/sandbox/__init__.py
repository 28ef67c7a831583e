"""Local fakes of the outside services Shouhu talks to (Telegram, Twilio), for demos, drills and tests."""

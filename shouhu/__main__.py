from shouhu.cli import app

app()

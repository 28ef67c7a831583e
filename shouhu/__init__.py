"""The composition root: the only package that knows every service.

It holds what puts the services together (the `shouhu` command, the full
table metadata for the migrations, `shouhu up`); the services themselves
import only `shared/` and their own package (checked by import-linter).
"""

"""Built-in corpora that need no download (see `pydocs`)."""

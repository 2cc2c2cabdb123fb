"""microgpt_train (in progress: see the package README)."""

__all__: list[str] = []

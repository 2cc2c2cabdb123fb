"""microgpt_data (in progress: see the package README)."""

__all__: list[str] = []

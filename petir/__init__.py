"""petir: connected parameter-efficient tuning for dense retrieval and re-ranking, plugged into Pyserini."""

__version__ = "0.1.0"

"""petir: parameter-efficient tuning for dense retrieval and re-ranking, with the connected (IAA) modules of Ma et
al. (CIKM 2022), plugged into Pyserini."""

__version__ = "0.1.0"

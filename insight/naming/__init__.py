"""Naming concepts (Sec. 3.4): the vocabulary, its embeddings (Eq. B.11) and names (Eq. 6, B.9, B.12-B.13)."""

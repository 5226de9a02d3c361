"""The Matryoshka BatchTopK SAE (Sec. 3.2, App. B.2): model, training, encoding to concept shards."""

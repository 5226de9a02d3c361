"""Image sources and benchmark layouts: listing, sharding and decoding images (Sec. 3.1, 4)."""

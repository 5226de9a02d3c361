"""The concept hierarchy (Sec. 3.3): co-occurrence matrix D (Eq. 5) and the family DAG."""

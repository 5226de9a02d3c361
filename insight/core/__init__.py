"""Shared plumbing of every stage: atomic output, logging, devices, settings, code versions. Cheap to import (no torch)."""

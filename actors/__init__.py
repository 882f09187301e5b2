"""Actors: one module of behaviour per role; plumbing lives in `soar_async.runtime`."""

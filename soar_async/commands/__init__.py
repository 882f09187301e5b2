"""CLI command groups that are not owned by a subsystem package."""

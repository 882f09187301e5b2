"""The `soar` commands, one module per command group: each parses its flags, calls library code and prints.

Nothing outside this package imports it (apart from `soar_async.cli`, which registers the modules).
"""

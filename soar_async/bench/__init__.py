"""Benchmarks that compare against a baseline in the same run and report ratios (`soar bench ...`).

`sandbox`: the executors side by side on one program corpus; `bus`: what the bus costs per hop
against the sandbox time of the same programs. Each returns plain data and renders it as text.
"""

"""SOAR's search as a distributed pipeline: the plan every actor agrees on, and the archive's store.

The proposer, the refiner and the archive never talk about what was requested: each reads
the same `SearchTask` and derives the same request *slots* from it (`plan`), and every slot
is resolved exactly once by a `Proposals` event. That is what lets any of them be killed
and restarted without a budget spent twice or a task waiting forever.
"""

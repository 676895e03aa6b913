"""Reliability and security suite: fuzzing, access control, faults, load (issue 8).

The fast parts run in `make test`; `make soak` runs the same tests longer (more fuzz examples,
a long load) and prints the figures docs/reliability.md quotes.
"""

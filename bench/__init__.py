"""Side-by-side benchmarks of browserd against the floors it sits on (see BENCHMARKS.md).

Run `make bench` (or `python -m bench`; `--quick` for a smoke run). Each scenario module has
`run(*, quick: bool) -> list[Row]`; `cli` runs them, prints the table and writes the report.
"""

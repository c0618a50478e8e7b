"""`python -m metasearch` runs the command line."""

from metasearch.cli import run

run()

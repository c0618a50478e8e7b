"""metasearch: architecture and metric search for few-shot learners."""

__version__ = "0.1.0"

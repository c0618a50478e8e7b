"""Built-in search spaces, registered through the `metasearch.search_spaces` entry points."""

"""Built-in meta-learner plugins, registered through the `metasearch.plugins` entry points."""

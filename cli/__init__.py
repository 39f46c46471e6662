"""The ``ofedrepo`` command line: above the web and worker layers, it may use both."""

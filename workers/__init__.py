"""Job claiming and the worker loop (issue 4). Builds will call ``ofedrepo.publish.Publisher`` to publish."""

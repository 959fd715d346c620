"""From a suite to stored results: planning what is pending, cutting it into units of work,
executing them here, in worker processes or on dask, and writing results as they arrive."""

"""Running jobs: the runner loop, batching, the worker pool, worker processes and their model caches."""

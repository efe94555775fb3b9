"""Running a pipeline: the config, the graph and its plan, the runner and its tasks, executors (threads, Ray), reuse
across re-runs, the run folder's lock, held-out samples, memory estimates and drop warnings."""

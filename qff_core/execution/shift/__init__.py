"""Parameter shift: the planner (rows to evaluate and how to reassemble them), the Dask fan-out with
retries, the job journal of remote runs, and the executor that ties them to a circuit backend."""

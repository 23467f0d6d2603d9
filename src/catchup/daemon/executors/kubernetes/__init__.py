"""Cycles as Kubernetes Jobs: executor.py runs them, job.py builds them, lease.py
holds the shard's Lease in the cluster."""

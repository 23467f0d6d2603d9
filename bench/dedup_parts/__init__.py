"""The parts of bench/dedup.py: the sandbox source, the workloads, the chunk sweep,
the backup cycles and the report."""

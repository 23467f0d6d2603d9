"""The parts of bench/archive.py: the rig (sources, config, writer, archivers), the
scenarios, the manual point-in-time restores it is compared with, and the report."""

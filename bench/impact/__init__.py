"""The parts of bench/source_impact.py, one concern per module."""

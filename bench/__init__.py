"""Benchmarks: ``python3 dev.py bench`` (bench/resume.py); see the README's Benchmarks section."""

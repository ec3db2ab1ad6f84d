"""Profiling: the step timeline and torch profiler window (`profiler`), CPU/GPU sampling
(`system_metrics`), and the rules that judge both (`rules`)."""

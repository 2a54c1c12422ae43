"""Benchmarks of nas-search (run as scripts) and the research code they share (:mod:`.lib`)."""

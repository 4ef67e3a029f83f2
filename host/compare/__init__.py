"""Deployed-accuracy comparison: models trained by other frameworks, deployed on cqtf's emulated device.

Each framework module trains an architecture of cqtf's zoo its own way and hands back a
`FrameworkModel`: the accuracy the framework shows at training time, its own predictions on the test
set, and the integers the device runs (an IntModel). `deploy.py` runs that IntModel on the emulated
board; benchmarks/compare_frameworks.py builds the table.
"""

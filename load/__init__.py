"""Load generation against the real services (issue 7): ``python -m load.loadgen``."""

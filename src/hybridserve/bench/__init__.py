"""Load generation and the comparison of serving systems (``hybridserve bench``)."""

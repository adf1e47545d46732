"""Plan a sweep (``plan``), execute one run (``execute``), drive a sweep (``sweep``)."""

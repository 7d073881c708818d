"""Network executors behind one protocol (see `base.Network`)."""

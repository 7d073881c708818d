"""Schedulers that run the stages: offline (whole utterance) and, later, online (streaming)."""

"""The one frame renderer: stitch → warp → decode → paste-back, for offline jobs and live streams."""

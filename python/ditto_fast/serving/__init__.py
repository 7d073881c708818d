"""The serving layer: many live sessions behind one engine, and the network service."""

"""Where data lives and how it moves (llama.cpp's buffer / stream / device split; the CPU is just
another device, whose stream is "now"). Everything here but `ring_writer` needs torch, and is
imported only where a torch executor runs.

- streams.py: `DeviceStream`, `DeviceEvent` (immediate off CUDA);
- graphs.py: `GraphedFunction`, one CUDA graph per input signature (eager off CUDA);
- transfers.py: host arrays and DLPack producers onto a device without stalling the host;
- precision.py: the precision policy per network, and modules prepared and run under it;
- ring_writer.py: finished frames into `FrameRing` slots, from the host or from a device.
"""

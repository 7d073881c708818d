"""Device-resident rendering with torch: the source uploaded once, frames batched through warp and
decoder, pasted back on the device, and copied out once each into ring slots.

The code is device-agnostic: it runs on the CPU (how it is tested) and uses CUDA streams, events,
graphs and the Triton paste-back kernel only when the device is CUDA. Needs torch.

- precision.py: the precision policy per network and `DeviceNetwork`, a module prepared under it;
- resident.py: `ResidentSource` (an Avatar on the device) and DLPack interop helpers;
- paste_geometry.py, paste.py: paste-back sample positions (host) and the torch paste-back;
- streams.py: `DeviceStream`, `DeviceEvent`;
- graphs.py: `GraphedFunction`, one CUDA graph per input signature;
- ring_writer.py: `RingWriter`, device frames into FrameRing slots;
- batched_render.py: `BatchedRenderer`, the offline render path tying them together.
"""

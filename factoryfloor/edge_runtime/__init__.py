"""The edge runtime: serve a policy bundle to robot controllers over ZeroMQ (FFEP/1).

It never imports ``factoryfloor.sim``, pybullet or torch (a test checks ``sys.modules``): an edge
box next to a robot needs only NumPy, pyzmq and (optionally) onnxruntime.
"""

from __future__ import annotations

"""Where the parts meet: the simulated cell, the served expert and the demo app.

The simulated cell stands behind the edge protocol as a real controller would, the scripted
expert behind the policy server, and the demo app (orchestration, console, media, live view)
runs them together. Only this layer and ``factoryfloor.cli`` import several of ``sim``,
``policies`` and ``edge_runtime``; those three never import it.
"""

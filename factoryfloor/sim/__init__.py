"""PyBullet factory cells as Gymnasium environments (the only pybullet user is backend.py)."""

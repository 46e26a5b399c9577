"""``factoryfloor robustness BUNDLE``: a bundle's success over a grid of perturbations.

``axes`` names the perturbations (units, levels), ``sensors`` and ``link`` perturb what the
policy sees and when its answers arrive, ``run`` runs the grid as the edge runtime would,
``ray_grid`` spreads it over Ray, ``report`` writes the table, JSON and heat map.
"""

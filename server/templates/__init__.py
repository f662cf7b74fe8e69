"""Email templates: a pure ``{{variable}}`` renderer and the template store."""

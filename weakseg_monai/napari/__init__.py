"""napari plugin: open our volumes, predictions and datasets, draw 3D boxes and paint a few masks, save them as a
weak dataset, train on it through the bundle's train workflow, and segment with a trained model.

Install with ``pip install -e ".[napari]"`` (Python >= 3.11). Modules: ``axes`` (the one (x, y, z) <-> (z, y, x)
edge), ``boxes`` (the box rules, pure numpy), ``layers`` (layers <-> our data), ``annotate`` (the gestures, documented
there), ``reader``, ``save``, ``segment``, ``train`` (no Qt), and ``widgets`` (the Qt / magicgui dock widgets on top).
"""

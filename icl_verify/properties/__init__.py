"""Hypothesis properties of icl_verify: one module per claim, each run over the whole registry.

Installed with the package; run them on a layer of your own from any folder with
``pytest --pyargs icl_verify.properties -p icl_verify.properties.plugin -p my_layers -k my_layer``
(docs/how-to/register-a-layer.md). In a checkout, ``pytest properties/`` runs the same files."""

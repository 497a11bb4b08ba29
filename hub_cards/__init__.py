"""Model-card templates for the Hub (installed as ``facetools_dapfsr.hub_cards``; read them with
``importlib.resources``). Placeholders use :class:`string.Template` syntax (``${name}``)."""

"""The web console: a page served at `/console` that draws the gateway's figures (see pages.py)."""

"""The staff web page (index.html), shipped as package data."""

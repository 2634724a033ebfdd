"""Readers and writers of scene formats; each converts to and from ``Cameras`` (OpenCV axes) at the edge."""

"""Regeneration at the receiver: a conditional diffusion decoder (``genscom.generation.diffusion``, needs the
``[gen]`` extra: diffusers) that draws a frame from a received embedding.

No trained decoder ships yet, so the demo's image task still reports that none is installed; importing this
package does not import diffusers.
"""
